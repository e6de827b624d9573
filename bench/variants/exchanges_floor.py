"""Variant (a measurement, not a fast path): the server reduced to a call's HTTP exchanges.

What would a call cost a server that did nothing but its exchanges? This replaces
`server.main` with a bare aiohttp app that answers the same requests the same way on the wire,
and does none of the service's work: `POST /calls/outbound` reads the JSON body, dispatches the
agent and dials through the real LiveKit client (`common.livekit.client`, so both Twirp calls
and their tokens are as the server makes them; the dispatch carries the report URL, so the
sandbox plays the agent and posts its reports), and answers the seed's 200 body. LiveKit's
webhooks and the agent's reports are read whole and answered 200 with their usual bodies; no
config write, no database, no validation, no logging. `FLOOR_VERIFY = True` (the
`exchanges_floor_verified` variant) adds the one piece of work the issue's rules keep whatever
it costs: each webhook's and report's signature check (`common.signing.BodyVerifier`).
`FLOOR_DURABLE = True` as well (`exchanges_floor_durable`) adds the least durable writing the
rules keep (fsync before answering), each on a thread of its own as the server does it: for an
intake, the call's config written as config.json is (temp file, fsync, rename, directory
fsync) and one fsync'd record of the call before its dial; for each webhook and each report
POST, one fsync'd record (the server's one transaction each). Both are group commits, as the
server's are: what queued while an fsync ran is written with the next one.

`/metrics` gives what `bench.compare` reads: the live calls (up at each answered intake, down
at each call's `room_finished`), the ended ones as `completed`, and the requests answered by
route; `GET /calls?status=dialing` lists the live ones. bench.compare's tables then give this
floor's server CPU per call, and as a multiple of hello-world's, next to the real server's.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

import server
from common.contracts import REPORTS_PATH
from common.livekit.client import create_client, create_session, dial, dispatch_agent
from common.settings import Settings, load_settings
from common.signing import REPORT_MAX_AHEAD, WEBHOOK_MAX_AHEAD, BodyVerifier

FLOOR_VERIFY: bool = globals().get("FLOOR_VERIFY", False)
FLOOR_DURABLE: bool = globals().get("FLOOR_DURABLE", False)


class _Group:
    """Group commit: whatever queued while a flush ran is flushed next, in one go, on the
    flush's own thread (as the server's database and config writer do)."""

    def __init__(self, name: str, flush: Callable[[list[bytes]], None]) -> None:
        self.thread = ThreadPoolExecutor(1, name)
        self.flush = flush
        self.queued: list[tuple[bytes, asyncio.Future[None]]] = []
        self.running = False

    async def add(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.queued.append((data, done))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.queued:
            batch, self.queued = self.queued, []
            await loop.run_in_executor(self.thread, self.flush, [data for data, _ in batch])
            for _, done in batch:
                done.set_result(None)
        self.running = False


class _Durable:
    """fsync'd records on one thread (the database's), config writes on another."""

    def __init__(self, settings: Settings) -> None:
        self.config = Path(settings.config_path)
        records = self.config.with_name("floor-records.log")
        self.fd = os.open(records, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.records = _Group("floor-db", self._append)
        self.writes = _Group("floor-config", self._write_config)

    def _append(self, batch: list[bytes]) -> None:
        os.write(self.fd, b"\n".join(batch) + b"\n")
        os.fsync(self.fd)

    def _write_config(self, batch: list[bytes]) -> None:
        temp = self.config.with_name(f".{self.config.name}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\n".join(batch))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.config)
        directory = os.open(self.config.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def record(self, data: bytes) -> None:
        if FLOOR_DURABLE:
            await self.records.add(data)

    async def write_config(self, data: bytes) -> None:
        if FLOOR_DURABLE:
            await self.writes.add(data)


def _floor_app() -> web.Application:
    settings = load_settings()
    live: set[str] = set()
    answered: Counter[str] = Counter()
    ended = {"n": 0}
    webhooks = BodyVerifier(
        settings.livekit_api_key, settings.livekit_api_secret, max_ahead=WEBHOOK_MAX_AHEAD
    )
    reports = BodyVerifier(
        settings.livekit_api_key, settings.livekit_api_secret, max_ahead=REPORT_MAX_AHEAD
    )
    durable = _Durable(settings)
    app = web.Application()
    livekit: dict[str, object] = {}

    async def clients(app: web.Application):  # type: ignore[no-untyped-def]
        session = create_session()
        livekit["api"] = create_client(settings, str(settings.livekit_url), session)
        yield
        await session.close()

    app.cleanup_ctx.append(clients)

    async def outbound(request: web.Request) -> web.Response:
        raw = await request.read()
        body = json.loads(raw)
        call_id = "call-" + secrets.token_hex(6)
        number = body["phone_number"]
        lkapi = livekit["api"]
        record = {"caller_name": body.get("name", ""), "call_id": call_id}
        await durable.write_config(raw)
        await durable.record(raw)
        await dispatch_agent(
            lkapi,  # type: ignore[arg-type]
            settings,
            call_id=call_id,
            phone_number=number,
            record=record,
            ringing_timeout_s=30,
        )
        await dial(
            lkapi,  # type: ignore[arg-type]
            settings,
            call_id=call_id,
            phone_number=number,
            ringing_timeout_s=30,
            max_duration_s=3600,
        )
        live.add(call_id)
        answered["POST /calls/outbound"] += 1
        answer = {"status": "success", "call_id": call_id, "room": call_id}
        return web.json_response(answer | {"call_status": "dialing"})

    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        if FLOOR_VERIFY:
            webhooks.verify(request.headers.get("Authorization", ""), body)
        await durable.record(body)
        if b'"room_finished"' in body:
            room = json.loads(body)["room"]["name"]
            if room in live:
                live.discard(room)
                ended["n"] += 1
        answered["POST /webhooks/livekit"] += 1
        return web.json_response({"result": "applied"})

    async def report(request: web.Request) -> web.Response:
        body = await request.read()
        if FLOOR_VERIFY:
            reports.verify(request.headers.get("Authorization", ""), body)
        await durable.record(body)
        doc = json.loads(body)
        answered["POST /agent/reports"] += 1
        if isinstance(doc, list):
            results = [{"seq": r["seq"], "result": "applied", "error": None} for r in doc]
            return web.json_response({"results": results})
        return web.json_response({"result": "applied"})

    async def metrics(request: web.Request) -> web.Response:
        lines = [
            f'calls{{status="dialing"}} {len(live)}',
            f'calls{{status="completed"}} {ended["n"]}',
        ]
        for key, n in answered.items():
            method, route = key.split(" ")
            lines.append(f'http_requests_total{{method="{method}",route="{route}",code="200"}} {n}')
        return web.Response(text="\n".join(lines) + "\n")

    async def calls(request: web.Request) -> web.Response:
        listed = sorted(live) if request.query.get("status") == "dialing" else []
        return web.json_response({"calls": [{"call_id": c} for c in listed]})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/calls/outbound", outbound)
    app.router.add_post(settings.webhook_path, webhook)
    app.router.add_post(REPORTS_PATH, report)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/calls", calls)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", health)
    return app


def _main() -> None:
    settings = load_settings()
    print(f"floor server (verify={FLOOR_VERIFY}, durable={FLOOR_DURABLE})", file=sys.stderr)
    web.run_app(_floor_app(), host=settings.host, port=settings.port, access_log=None)


server.main = _main
