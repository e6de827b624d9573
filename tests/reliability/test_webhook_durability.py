"""Customer webhooks survive a SIGKILL of the server at any moment: between an event's commit
and its delivery, and in the middle of a delivery. After a restart every event is delivered
(at least once), and a repeat carries the same `webhook-id`.

The server runs as users run it (`server.main()` in its own process, embedded sandbox); the
receiver is in this test's process and verifies every request with `standardwebhooks`.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from tests.helpers import serving_posts, wait_for
from tests.processes import ServerProcess, free_port
from tests.reliability.conftest import Figures, LogGuard, scaled

SECRET = "whsec_" + base64.b64encode(b"durability-test-webhook-secret-0123").decode()
EVENT_TYPES = {"call.dialing", "call.answered", "call.ended", "call.report"}
BODY = {"phone_number": "+14155557702", "name": "Durable", "language": "en"}


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.status = 204
        self.on_request: Callable[[], None] | None = None
        self.hook_on_type = ""  # on_request fires on the first event of this type
        self.got: list[tuple[str, str, str]] = []  # (webhook-id, type, call id), delivered
        self.attempts: list[str] = []  # every request's webhook-id

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        Webhook(SECRET).verify(body, headers)  # raises (500) on a bad signature
        self.attempts.append(headers["webhook-id"])
        event_type = json.loads(body)["type"]
        if self.on_request is not None and event_type == self.hook_on_type:
            hook, self.on_request = self.on_request, None
            hook()  # e.g. SIGKILL the server while it waits for this answer
            await asyncio.sleep(0.5)
        if self.status < 300:
            event = json.loads(body)
            self.got.append((headers["webhook-id"], event["type"], event["data"]["call_id"]))
        return web.Response(status=self.status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver()
    async with serving_posts("/hooks", box.handle, box.port):
        yield box


def server_env(tmp_path: Path, receiver: Receiver) -> dict[str, str]:
    return {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "SANDBOX_PORT": "0",
        "SANDBOX_TIME_SCALE": "0.02",
        "CALLS_SETTLE_GRACE_S": "0",
        "CALLS_WEBHOOK_URL": receiver.url,
        "CALLS_WEBHOOK_SECRET": SECRET,
        "CALLS_WEBHOOK_ALLOW_PRIVATE": "1",
        "CALLS_WEBHOOK_RETRY_SCHEDULE": ",".join(["0"] + ["0.2"] * 40),
    }


async def place_calls(session: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        async with session.post(f"{url}/calls/outbound", json=BODY) as resp:
            assert resp.status == 200
            ids.append((await resp.json())["call_id"])
    return ids


def delivered_types(receiver: Receiver) -> dict[str, set[str]]:
    by_call: dict[str, set[str]] = {}
    for _, event_type, call_id in receiver.got:
        by_call.setdefault(call_id, set()).add(event_type)
    return by_call


async def test_sigkill_between_commit_and_delivery_loses_no_event(
    tmp_path: Path,
    receiver: Receiver,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    env = server_env(tmp_path, receiver)
    first = ServerProcess(tmp_path, "first", env)
    processes.append(first)
    receiver.status = 503  # the receiver is down: every event waits in the database
    count = scaled(5)
    async with aiohttp.ClientSession() as session:
        await first.wait_ready(session)
        call_ids = await place_calls(session, first.url, count)

        async def all_over() -> bool:
            for call_id in call_ids:
                async with session.get(f"{first.url}/calls/{call_id}") as resp:
                    call = await resp.json()
                if call["report_status"] != "complete" or call["status"] != "completed":
                    return False
            return True

        await wait_for(all_over)
        first.kill()  # committed, not delivered
        assert receiver.got == []
        receiver.status = 204
        second = ServerProcess(tmp_path, "second", env, port=first.port)
        processes.append(second)
        await second.wait_ready(session)

        async def all_delivered() -> bool:
            return delivered_types(receiver) == dict.fromkeys(call_ids, EVENT_TYPES)

        await wait_for(all_delivered)
    log_guard.scan(first.logs() + second.logs())
    figures.add(
        f"{count} calls, receiver down, SIGKILL, restart: {len(receiver.got)} deliveries, "
        f"every one of {4 * count} events delivered"
    )


async def test_sigkill_during_a_delivery_redelivers_with_the_same_id(
    tmp_path: Path,
    receiver: Receiver,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    env = server_env(tmp_path, receiver)
    first = ServerProcess(tmp_path, "first", env)
    processes.append(first)

    def kill_now() -> None:
        first.kill()  # the server dies while its POST waits for our answer

    receiver.on_request = kill_now
    receiver.hook_on_type = "call.ended"  # the call is over; its last event is cut short
    async with aiohttp.ClientSession() as session:
        await first.wait_ready(session)
        try:
            async with session.post(f"{first.url}/calls/outbound", json=BODY) as resp:
                await resp.read()
        except aiohttp.ClientError:
            pass  # the server may die before it answers
        await wait_for(lambda: _true(first.proc.poll() is not None))
        second = ServerProcess(tmp_path, "second", env, port=first.port)
        processes.append(second)
        await second.wait_ready(session)

        async def all_delivered() -> bool:
            by_call = delivered_types(receiver)
            return bool(by_call) and all(types == EVENT_TYPES for types in by_call.values())

        await wait_for(all_delivered)
    seen = receiver.attempts
    repeats = [i for i, n in Counter(seen).items() if n > 1]
    (ended,) = {i for i, t, _ in receiver.got if t == "call.ended"}
    assert ended in repeats  # the delivery cut short was sent again, under its own id
    log_guard.scan(first.logs() + second.logs())
    figures.add(
        f"SIGKILL during a delivery: {len(seen)} requests, {len(repeats)} id(s) sent twice "
        "(same webhook-id), all 4 events delivered after the restart"
    )


async def _true(value: bool) -> bool:
    return value
