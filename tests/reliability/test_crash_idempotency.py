"""An Idempotency-Key survives a crash: the server is SIGKILLed at the moment its dial reaches
LiveKit, restarted, and the client's retry (same key, same body) gets the call that was placed,
never a second call to the same person.

LiveKit is a sandbox in this test's own process (so it outlives the server and the test can
kill the server from inside the dial request); the server runs as `server.main()` configured
for a "real" LiveKit at the sandbox's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.calls.service import NEVER_DIALLED
from sandbox import Sandbox
from tests.processes import ServerProcess
from tests.reliability.conftest import Figures, LogGuard

KEY = "APIcrashtest"
SECRET = "crash-test-livekit-secret-0123456789abcdef"
TOKEN = "crash-test-api-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "order-42-reminder"}
BODY = {"phone_number": "+14155557705", "name": "Dana", "language": "en", "emotion": "Calm"}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url=None, time_scale=0.01)
    await box.start()
    yield box
    await box.stop()


def server_env(tmp_path: Path, sandbox: Sandbox) -> dict[str, str]:
    return {
        "LIVEKIT_URL": sandbox.url,
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "SIP_OUTBOUND_TRUNK_ID": "ST_crashtest",
        "CALLS_API_TOKEN": TOKEN,
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "REAPER_INTERVAL_S": "3600",
    }


def dials(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [r.body for r in sandbox.requests if r.method == "CreateSIPParticipant"]


async def post_killed_midway(session: aiohttp.ClientSession, server: ServerProcess) -> None:
    """The call's POST to `server`, which the sandbox kills while the POST is handled: the
    client sees no answer. An answer is shown with the server's log."""
    try:
        async with session.post(f"{server.url}/calls/outbound", json=BODY, headers=HEADERS) as resp:
            answer = f"{resp.status} {await resp.text()}"
    except aiohttp.ClientError:
        return
    pytest.fail(
        f"{server.name} answered {answer} instead of dying midway; its log:\n{server.logs()}"
    )


async def test_a_retry_after_a_crash_mid_dial_never_dials_again(
    tmp_path: Path,
    sandbox: Sandbox,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    log_guard.hide(TOKEN, SECRET)
    env = server_env(tmp_path, sandbox)
    first = ServerProcess(tmp_path, "first", env)
    processes.append(first)
    sandbox.webhook_url = f"{first.url}/webhooks/livekit"

    def crash_now(_body: dict[str, Any]) -> bool:
        first.kill()  # SIGKILL while LiveKit is handling the dial: it still rings the phone
        return True

    sandbox.inject("CreateSIPParticipant", when=crash_now, times=1)
    async with aiohttp.ClientSession() as session:
        await first.wait_ready(session)
        await post_killed_midway(session, first)
        (dial,) = dials(sandbox)  # the phone is ringing, and the client saw no answer
        assert first.proc.returncode is not None

        second = ServerProcess(tmp_path, "second", env, port=first.port)
        processes.append(second)
        log_guard.scan(first.logs())
        await second.wait_ready(session)
        answers = []
        for _ in range(3):  # the client retries, as it should, with the same key and body
            async with session.post(
                f"{second.url}/calls/outbound", json=BODY, headers=HEADERS
            ) as resp:
                answers.append(
                    (resp.status, await resp.json(), resp.headers.get("Idempotent-Replay"))
                )
        other_body = dict(BODY, name="Someone Else")
        async with session.post(
            f"{second.url}/calls/outbound", json=other_body, headers=HEADERS
        ) as resp:
            reused = resp.status
        log_guard.scan(second.logs())

    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert {doc["call_id"] for _, doc, _ in answers} == {dial["room_name"]}
    assert all(replay == "1" for _, _, replay in answers)
    assert len(dials(sandbox)) == 1  # never a second call to the same person
    assert reused == 409
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(config["calls"]) <= {dial["room_name"]}  # no record for a call never placed
    figures.add(
        "SIGKILL inside the dial, restart, 3 retries with the same key: "
        f"{[s for s, _, _ in answers]}, same call id, {len(dials(sandbox))} dial in all; "
        f"another body under the key: {reused}"
    )


async def test_a_key_whose_call_was_never_dialled_is_freed_by_the_restart(
    tmp_path: Path,
    sandbox: Sandbox,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    """Killed after the call was recorded but before its dial: the restarted server knows
    the call as its own earlier run's (placed_by, placed_run), settles it failed, nobody
    called, as it starts, and frees its key: the retry places the call, dialled once. Before,
    the restart could not tell it from another server's placement under way: the retry was
    answered 409 "still being placed" for a minute (PLACEMENT_BOUND_S), the call live."""
    log_guard.hide(TOKEN, SECRET)
    env = server_env(tmp_path, sandbox)
    first = ServerProcess(tmp_path, "first", env)
    processes.append(first)

    def crash_now(_body: dict[str, Any]) -> bool:
        first.kill()
        return True

    sandbox.inject("CreateDispatch", when=crash_now, times=1)
    async with aiohttp.ClientSession() as session:
        await first.wait_ready(session)
        await post_killed_midway(session, first)
        with contextlib.closing(sqlite3.connect(tmp_path / "calls.db")) as db, db:
            ((killed, placed_by),) = db.execute("SELECT call_id, placed_by FROM calls").fetchall()
        assert placed_by  # the server placing it, by name
        second = ServerProcess(tmp_path, "second", env, port=first.port)
        processes.append(second)
        await second.wait_ready(session)
        async with session.get(f"{second.url}/calls/{killed}", headers=HEADERS) as resp:
            before = await resp.json()
        async with session.post(f"{second.url}/calls/outbound", json=BODY, headers=HEADERS) as resp:
            status, placed = resp.status, await resp.json()
        log_guard.scan(first.logs() + second.logs())
    assert (before["status"], before["reason"]) == ("failed", NEVER_DIALLED), before
    assert status == 200, placed
    assert placed["call_id"] != killed
    assert [d["room_name"] for d in dials(sandbox)] == [placed["call_id"]]  # dialled once
    figures.add(
        "SIGKILL inside the dispatch, restart: the call settled failed as the server started;"
        f" the retry under its key placed it ({status}), 1 dial in all"
    )


async def test_a_campaign_attempt_left_undialled_is_placed_again_soon_after_a_restart(
    tmp_path: Path,
    sandbox: Sandbox,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
) -> None:
    """A campaign's server killed between recording a recipient's call and dialling it,
    restarted at once: the attempt ends not_dialled as the server starts and the recipient
    is placed again NOT_DIALLED_RETRY_S (5 s) later, dialled once. Before, its call waited
    out PLACEMENT_BOUND_S (60 s) live, and the recipient with it."""
    log_guard.hide(TOKEN, SECRET)
    env = server_env(tmp_path, sandbox) | {"CAMPAIGN_ENFORCE_CALLING_HOURS": "0"}
    first = ServerProcess(tmp_path, "first", env)
    processes.append(first)

    def crash_now(_body: dict[str, Any]) -> bool:
        first.kill()
        return True

    sandbox.inject("CreateDispatch", when=crash_now, times=1)
    body = {
        "name": "restart",
        "recipients": [{"phone_number": "+14155557705"}],
        "window": {"start": "00:00", "end": "24:00", "timezone": "UTC"},
    }
    async with aiohttp.ClientSession() as session:
        await first.wait_ready(session)
        async with session.post(f"{first.url}/campaigns", json=body, headers=HEADERS) as resp:
            assert resp.status == 201, await resp.text()
        async with asyncio.timeout(30):
            while first.proc.poll() is None:  # killed as its dispatch reaches LiveKit
                await asyncio.sleep(0.05)
        second = ServerProcess(tmp_path, "second", env, port=first.port)
        processes.append(second)
        started = time.monotonic()
        await second.wait_ready(session)
        async with asyncio.timeout(30):
            while not dials(sandbox):
                await asyncio.sleep(0.1)
        waited = time.monotonic() - started
        log_guard.scan(first.logs() + second.logs())
    with contextlib.closing(sqlite3.connect(tmp_path / "calls.db")) as db, db:
        attempts = db.execute("SELECT attempt, status FROM campaign_attempts").fetchall()
    assert attempts[0] == (1, "not_dialled"), attempts
    assert len(dials(sandbox)) == 1
    assert waited < 20, waited
    figures.add(
        f"campaign's server SIGKILLed inside a recipient's dispatch, restarted: dialled"
        f" {waited:.1f} s after the restart (once)"
    )
