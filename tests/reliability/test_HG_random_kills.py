"""The server SIGKILLed at random moments under load, restarted each time on the same calls.db
and config.json, and what a customer relies on still holds at the end.

The load: four clients posting POST /calls/outbound (most with an Idempotency-Key), a campaign
running, customer webhooks to a receiver in this test's process. LiveKit is a sandbox in this
test's process (it outlives the server, as a real LiveKit does) that counts every dial it is
asked for. Some kills come while the server starts (its recovery of the last kill under way).

Checked after every kill: config.json whole (a JSON object, every record complete), its lock
not held, calls.db's `PRAGMA integrity_check` (on a copy, so the restart recovers the WAL
itself). Checked at the end: no call dialled twice; every call a client got a 200 for stored and
dialled once; every key retried once more gets one call and no new dial; every call final;
one call.ended per call, delivered, a webhook-id never carrying two bodies; the campaign
completed with no attempt dialled twice; no traceback in any server's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import random
import shutil
import sqlite3
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from sandbox import Sandbox
from tests.helpers import serving_posts, wait_for
from tests.processes import ROOT, ServerProcess, free_port
from tests.reliability.conftest import Figures, LogGuard, scaled

KEY = "APIHGrandomkills"
SECRET = "hg-random-kills-livekit-secret-0123456789abcdef"
TOKEN = "hg-random-kills-api-token-0123456789"
WHSEC = "whsec_" + base64.b64encode(b"hg-random-kills-webhook-secret-01234").decode()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FINAL = {"completed", "busy", "no_answer", "failed", "voicemail", "canceled"}
RECORD_FIELDS = ("caller_name", "agent_instructions", "tts_language", "tts_emotion")
# What a kill leaves unfinished settles after 3 s, not the bounds set for a real LiveKit and
# agents (tests.processes.settling_sooner); a killed server's delivery claims last 2 + 5 s
# (webhook_claims_sooner); a busy recipient is retried at once (retrying_sooner).
LAUNCHER = (
    f"import sys; sys.path.insert(0, {str(ROOT)!r}); import common.calls.service as s;"
    " s.PLACEMENT_BOUND_S = s.ROOM_CHECK_AFTER_S = s.REPORTS_RETRY_S = 3.0;"
    " import common.notify.deliveries as d; d.REQUEST_TIMEOUT_S = 2.0;"
    " import common.campaigns.request as r; r.DELAY_RANGE = (0.0, r.DELAY_RANGE[1]);"
    " import server; server.main()"
)


class Receiver:
    """Customer webhooks, verified: (webhook-id, type, call or campaign id, body)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.got: list[tuple[str, str, str, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        Webhook(WHSEC).verify(body, headers)
        event = json.loads(body)
        owner = event["data"].get("call_id") or event["data"].get("campaign_id")
        self.got.append((headers["webhook-id"], event["type"], str(owner), body))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver()
    async with serving_posts("/hooks", box.handle, box.port):
        yield box


@dataclass
class Dials:
    """Every CreateSIPParticipant the sandbox was asked for, by room (its request log is
    bounded; this is not)."""

    rooms: Counter[str] = field(default_factory=Counter)

    def count(self, body: dict[str, Any]) -> bool:
        self.rooms[str(body["room_name"])] += 1
        return False  # no fault: the dial goes on


@pytest.fixture
async def sandbox() -> AsyncIterator[tuple[Sandbox, Dials]]:
    box = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url=None, time_scale=0.05)
    dials = Dials()
    box.inject("CreateSIPParticipant", when=dials.count)
    await box.start()
    yield box, dials
    await box.stop()


@dataclass
class Clients:
    """Clients posting calls; what each key and each keyless request was answered."""

    rng: random.Random
    answers: dict[str, list[tuple[int, Any]]] = field(default_factory=lambda: defaultdict(list))
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    keyless: list[str] = field(default_factory=list)
    refused: list[tuple[int, Any]] = field(default_factory=list)
    replayed: set[str] = field(default_factory=set)  # calls a key's retry was answered
    sent: int = 0

    async def post(
        self, session: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str | None
    ) -> tuple[int, Any]:
        headers = AUTH | ({"Idempotency-Key": key} if key else {})
        try:
            async with session.post(f"{url}/calls/outbound", json=body, headers=headers) as resp:
                got = (resp.status, await resp.json())
                if resp.headers.get("Idempotent-Replay"):
                    self.replayed.add(got[1]["call_id"])
        except (TimeoutError, aiohttp.ClientError):
            got = (0, None)  # killed before it answered
        if key is not None:
            self.answers[key].append(got)
        elif got[0] == 200:
            self.keyless.append(got[1]["call_id"])
        elif got[0] not in (0, 503):
            self.refused.append(got)
        return got

    async def run(self, session: aiohttp.ClientSession, url: str, who: int) -> None:
        while True:
            self.sent += 1
            n = self.sent
            # answered at once (sandbox time), hung up 1-20 s (scaled) later
            number = f"+1415{200 + who * 100 + n % 100:03d}77{self.rng.randint(1, 20):02d}"
            body = {"phone_number": number, "name": f"Callee {n}", "language": "en"}
            key = f"order-{n}" if self.rng.random() < 0.7 else None
            if key is not None:
                self.bodies[key] = body
            await self.post(session, url, body, key)
            await asyncio.sleep(self.rng.uniform(0, 0.05))

    def told(self) -> set[str]:
        """Every call a client got a 200 for."""
        keyed = {doc["call_id"] for got in self.answers.values() for s, doc in got if s == 200}
        return keyed | set(self.keyless)

    def placed(self) -> set[str]:
        """The calls a placement was answered 200 for (not a retry's replay): the 200
        follows their dial."""
        return self.told() - self.replayed


def files_after_a_kill(tmp_path: Path, kill: int) -> list[str]:
    """What is wrong with config.json, its lock and calls.db as the kill left them."""
    problems = []
    config = tmp_path / "config.json"
    if config.exists():
        raw = config.read_bytes()
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            return [f"kill {kill}: config.json does not parse ({exc}): {raw[-60:]!r}"]
        if not isinstance(doc, dict):
            return [f"kill {kill}: config.json holds no object"]
        for call_id, record in doc.get("calls", {}).items():
            lacking = [k for k in RECORD_FIELDS if k not in record]
            if lacking:
                problems.append(f"kill {kill}: the record of {call_id} lacks {lacking}")
    lock = tmp_path / "config.json.lock"
    if lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            problems.append(f"kill {kill}: config.json.lock still held")
        finally:
            os.close(fd)  # the lock goes with the descriptor
    # On a copy: opened here, the WAL would be recovered (and checkpointed as the last
    # connection closes) by this test instead of by the restarted server.
    copy = tmp_path / f"copy-{kill}"
    copy.mkdir()
    for suffix in ("", "-wal"):
        if (tmp_path / f"calls.db{suffix}").exists():
            shutil.copy(tmp_path / f"calls.db{suffix}", copy / f"calls.db{suffix}")
    with contextlib.closing(sqlite3.connect(copy / "calls.db")) as db:
        ((verdict,),) = db.execute("PRAGMA integrity_check").fetchall()
        # Dialled, its room not finished: its agent may be joining now, and reads its record.
        live = db.execute(
            "SELECT call_id FROM calls WHERE status IN ('dialing', 'ringing', 'in_progress')"
            " AND dial_started_at IS NOT NULL AND room_finished_at IS NULL"
        ).fetchall()
    shutil.rmtree(copy)
    if verdict != "ok":
        problems.append(f"kill {kill}: integrity_check says {verdict}")
    records = json.loads(config.read_bytes()).get("calls", {}) if config.exists() else {}
    problems += [f"kill {kill}: live {c} has no config record" for (c,) in live if c not in records]
    return problems


def read_db(path: Path, sql: str, *args: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, args).fetchall()


@pytest.mark.parametrize("seed", [1, 2])
async def test_random_sigkills_under_load_keep_every_promise(
    seed: int,
    tmp_path: Path,
    sandbox: tuple[Sandbox, Dials],
    receiver: Receiver,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    log_guard.hide(TOKEN, SECRET, WHSEC)
    box, dials = sandbox
    rng = random.Random(seed)  # noqa: S311 - a test's schedule
    port = free_port()
    box.webhook_url = f"http://127.0.0.1:{port}/webhooks/livekit"
    db_path = tmp_path / "calls.db"
    env = {
        "LIVEKIT_URL": box.url,
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "SIP_OUTBOUND_TRUNK_ID": "ST_hgrandomkills",
        "CALLS_API_TOKEN": TOKEN,
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(db_path),
        "CALLS_WEBHOOK_URL": receiver.url,
        "CALLS_WEBHOOK_SECRET": WHSEC,
        "CALLS_WEBHOOK_ALLOW_PRIVATE": "1",
        "CALLS_WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["0.3"] * 60),
        "CALLS_RATE_LIMIT_PER_MIN": "1000000",
        "CALLS_MAX_ACTIVE": "100000",
        "CAMPAIGN_ENFORCE_CALLING_HOURS": "0",
        "CLAIM_LEASE_S": "2",
        "REAPER_INTERVAL_S": "0.5",
        "CALLS_SETTLE_GRACE_S": "0.2",
        "AGENT_JOIN_TIMEOUT_S": "0",
    }
    campaign = {
        "name": "kills",
        "recipients": [
            {"phone_number": f"+1650{200 + i:03d}{('7702', '0486')[i % 2]}"} for i in range(20)
        ],
        "pacing": {"calls_per_second": 10, "max_concurrent": 5},
        "window": {"start": "00:00", "end": "24:00", "timezone": "UTC"},
        "retry": {"on": ["busy"], "max_attempts": 2, "delay_s": 0},
    }
    kills = scaled(5)
    clients = Clients(rng)
    problems: list[str] = []
    servers: list[ServerProcess] = []

    def start(name: str) -> ServerProcess:
        server = ServerProcess(tmp_path, name, env, port=port, launcher=LAUNCHER)
        processes.append(server)
        servers.append(server)
        return server

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        server = start("run-0")
        await server.wait_ready(session)
        async with session.post(f"{server.url}/campaigns", json=campaign, headers=AUTH) as resp:
            assert resp.status == 201, await resp.text()
            campaign_id = (await resp.json())["campaign_id"]
        for kill in range(kills):
            load = [asyncio.create_task(clients.run(session, server.url, w)) for w in range(4)]
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            server.kill()
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)
            problems += files_after_a_kill(tmp_path, kill)
            server = start(f"run-{kill + 1}")
            if rng.random() < 0.3:  # again while it starts, recovering from the last kill
                await asyncio.sleep(rng.uniform(0.5, 2.0))  # its imports take about 1 s
                server.kill()
                problems += files_after_a_kill(tmp_path, kill + 1000)
                server = start(f"run-{kill + 1}-again")
            await server.wait_ready(session)
        # Every client retries what it sent under a key, the answer lost or not.
        before_retries = Counter(dials.rooms)
        for key, body in clients.bodies.items():
            await clients.post(session, server.url, body, key)

        async def settled() -> bool:
            live = read_db(
                db_path,
                "SELECT count(*) FROM calls WHERE status IN ('dialing', 'ringing', 'in_progress')",
            )
            pending = read_db(db_path, "SELECT count(*) FROM deliveries WHERE state = 'pending'")
            done = read_db(
                db_path, "SELECT status FROM campaigns WHERE campaign_id = ?", campaign_id
            )
            return live == pending == [(0,)] and done == [("completed",)]

        await wait_for(settled, timeout=60)
    for run in servers:
        log_guard.scan(run.logs())

    calls = dict(read_db(db_path, "SELECT call_id, status FROM calls"))
    attempts = read_db(db_path, "SELECT idx, attempt, call_id, status FROM campaign_attempts")
    recipients = dict(read_db(db_path, "SELECT idx, state FROM campaign_recipients"))
    told = clients.told()
    problems += [f"{room} dialled {n} times" for room, n in dials.rooms.items() if n > 1]
    problems += [f"{c} answered 200, not stored" for c in told if c not in calls]
    placed = clients.placed()
    problems += [f"{c} answered 200, never dialled" for c in placed if not dials.rooms[c]]
    problems += [f"refused {got}" for got in clients.refused]
    placed_anew = 0
    for key, got in clients.answers.items():
        ids = {doc["call_id"] for status, doc in got if status == 200}
        if len(ids) != 1:
            problems.append(f"key {key}: calls {sorted(ids)} in answers {[s for s, _ in got]}")
            continue
        # The last retry places a call only if the key's call was never dialled (killed
        # before its dial: settled failed as the server restarted, its key freed), dialled
        # once; otherwise it is answered the key's call, and dials nobody.
        (call_id,) = ids
        if before_retries[call_id] != dials.rooms[call_id]:
            placed_anew += 1
            if before_retries[call_id] or dials.rooms[call_id] != 1:
                problems.append(f"key {key}: its retry dialled {call_id} again")
    by_id: dict[str, set[bytes]] = defaultdict(set)
    ended: dict[str, set[str]] = defaultdict(set)
    for webhook_id, kind, owner, sent in receiver.got:
        by_id[webhook_id].add(sent)
        if kind == "call.ended":
            ended[owner].add(webhook_id)
    problems += [f"webhook-id {w} with {len(b)} bodies" for w, b in by_id.items() if len(b) > 1]
    problems += [f"{c}: {len(w)} call.ended events" for c, w in ended.items() if len(w) > 1]
    problems += [
        f"{c} ({status}): no call.ended delivered"
        for c, status in calls.items()
        if c not in ended and (dials.rooms[c] or c in told)
    ]
    problems += [f"{c} left {status}" for c, status in calls.items() if status not in FINAL]
    problems += [f"recipient {i} left {s}" for i, s in recipients.items() if s not in FINAL]
    made = Counter(a[0] for a in attempts if a[3] != "not_dialled")
    problems += [f"recipient {i}: {n} attempts" for i, n in made.items() if n > 2]
    problems += [f"{run.name}: a traceback" for run in servers if "Traceback" in run.logs()]
    assert problems == []
    figures.add(
        f"seed {seed}: {len(servers) - 1} SIGKILLs ({len(servers) - 1 - kills} while starting),"
        f" {len(calls)} calls, {sum(dials.rooms.values())} dials, none twice;"
        f" {len(clients.answers)} keys retried after the last restart"
        f" ({placed_anew} placed anew, never dialled before); {len(receiver.got)}"
        " customer webhooks, one call.ended per call; files whole after every kill"
    )
