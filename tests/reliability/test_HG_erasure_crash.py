"""An erasure on request whose server is SIGKILLed just after the database erased the call,
retried after the restart, leaves no copy of the callee's name or instructions beside
config.json.

config.json's unreadable copies set aside (`config.json.corrupt-<stamp>`, the newest 10 kept)
are found by what the erased call was placed with, which the database no longer holds once the
erasure is written: a server killed between the two (SIGKILL, the OOM killer) left them
holding the callee's name and instructions for good, and the client's retry was answered 200
"erased" all the same. Real processes: the server on its embedded sandbox, restarted on the
same calls.db and config.json.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import config_files_holding, wait_for
from tests.processes import ROOT, ServerProcess, placed_and_completed
from tests.reliability.conftest import Figures, LogGuard

NAME = "Zelda Quenby"
INSTRUCTIONS = "Remind Zelda Quenby of her dental appointment on Friday."
# The server dies once the erasure committed, before anything else it does (the log's
# emptying, config.json).
KILLED_AFTER_THE_ERASURE = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from common.storage.sql import SqlCallStore
from common.storage.sqlite import SqliteCallStore

async def erase_then_die(self, **asked):
    await SqlCallStore.erase_calls_now(self, **asked)
    os.kill(os.getpid(), signal.SIGKILL)

SqliteCallStore.erase_calls_now = erase_then_die
import server
server.main()
"""


def holding_the_callee(directory: Path) -> list[str]:
    return config_files_holding(directory, NAME.encode(), b"dental")


async def test_a_retried_erasure_after_a_crash_leaves_no_copy_of_the_callee(
    tmp_path: Path, processes: list[ServerProcess], figures: Figures, log_guard: LogGuard
) -> None:
    env = {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "SANDBOX_TIME_SCALE": "0.01",
        "CALLS_SETTLE_GRACE_S": "0",
    }
    body = {"phone_number": "+14155557701", "name": NAME, "dynamic_instruction": INSTRUCTIONS}
    async with aiohttp.ClientSession() as session:
        first = ServerProcess(tmp_path, "first", env)
        processes.append(first)
        await first.wait_ready(session)
        call_id = await placed_and_completed(session, first, body)
        # A torn hand edit: config.json unreadable, still holding the callee; the next call's
        # write sets it aside.
        config = tmp_path / "config.json"
        config.write_bytes(config.read_bytes()[:-3])
        other = {"phone_number": "+14155557701", "name": "Other Person"}
        async with session.post(f"{first.url}/calls/outbound", json=other) as resp:
            assert resp.status == 200, await resp.text()
        assert [n for n in holding_the_callee(tmp_path) if ".corrupt-" in n], "no copy set aside"
        first.kill()

        killed = ServerProcess(
            tmp_path, "killed", env, port=first.port, launcher=KILLED_AFTER_THE_ERASURE
        )
        processes.append(killed)
        await killed.wait_ready(session)
        try:
            async with session.post(f"{killed.url}/calls/{call_id}/erase") as resp:
                answered: object = resp.status
        except aiohttp.ClientError:
            answered = None  # no answer: the client retries
        await asyncio.to_thread(killed.proc.wait, 10)
        assert answered is None, f"answered {answered} instead of dying:\n{killed.logs()}"

        restarted = ServerProcess(tmp_path, "restarted", env, port=first.port)
        processes.append(restarted)
        await restarted.wait_ready(session)
        async with session.post(f"{restarted.url}/calls/{call_id}/erase") as resp:
            assert resp.status == 200, await resp.text()
            retried = await resp.json()
        async with session.get(f"{restarted.url}/calls/{call_id}") as resp:
            erased = await resp.json()
        for server in (first, killed, restarted):
            log_guard.scan(server.logs())
    assert retried["call_ids"] == [call_id]
    assert erased["name"] == "", erased
    assert holding_the_callee(tmp_path) == []
    for name in ("calls.db", "calls.db-wal"):  # the retry emptied the log, as an erasure does
        data = (tmp_path / name).read_bytes() if (tmp_path / name).exists() else b""
        assert NAME.encode() not in data and b"dental" not in data, name
    figures.add(
        "erasure on request SIGKILLed once the database erased the call, retried after the"
        " restart: no config.json copy holds the callee"
    )


async def test_the_log_a_crashed_erasure_left_is_emptied_as_the_server_starts(
    tmp_path: Path, processes: list[ServerProcess], figures: Figures, log_guard: LogGuard
) -> None:
    """The erasure's commit is in calls.db-wal, and calls.db's pages (and the log's older
    frames) still hold what it erased until the log is emptied into calls.db, which the
    erasure does next ("the erased text leaves the files at once"). Killed in between, with
    nobody retrying (a client that gave up, the retention's own erasure): the restarted
    server did not know, and the callee's name, instructions and transcript stayed readable
    in calls.db or calls.db-wal (89 copies of the name there after 5 more calls and 5 s)
    until SQLite's own checkpoint, ~4 MB of log later. It empties the log as it starts."""
    env = {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "SANDBOX_TIME_SCALE": "0.01",
        "CALLS_SETTLE_GRACE_S": "0",
        "REAPER_INTERVAL_S": "0.5",
    }
    body = {"phone_number": "+14155557701", "name": NAME, "dynamic_instruction": INSTRUCTIONS}
    async with aiohttp.ClientSession() as session:
        first = ServerProcess(tmp_path, "first", env)
        processes.append(first)
        await first.wait_ready(session)
        call_id = await placed_and_completed(session, first, body)
        first.kill()
        killed = ServerProcess(
            tmp_path, "killed", env, port=first.port, launcher=KILLED_AFTER_THE_ERASURE
        )
        processes.append(killed)
        await killed.wait_ready(session)
        with contextlib.suppress(aiohttp.ClientError):  # no answer: it dies
            async with session.post(f"{killed.url}/calls/{call_id}/erase") as resp:
                pytest.fail(f"answered {resp.status} instead of dying:\n{killed.logs()}")
        await asyncio.to_thread(killed.proc.wait, 10)

        def on_disk() -> bytes:
            files = (tmp_path / "calls.db", tmp_path / "calls.db-wal")
            return b"".join(path.read_bytes() for path in files if path.exists())

        assert NAME.encode() in on_disk()  # what the kill left, in the log or calls.db

        restarted = ServerProcess(tmp_path, "restarted", env, port=first.port)
        processes.append(restarted)
        await restarted.wait_ready(session)

        async def emptied() -> bool:
            return NAME.encode() not in on_disk()

        await wait_for(emptied, timeout=10)
        async with session.get(f"{restarted.url}/calls/{call_id}") as resp:
            assert (await resp.json())["name"] == ""  # erased, the kill notwithstanding
        for server in (first, killed, restarted):
            log_guard.scan(server.logs())
    figures.add("erasure SIGKILLed before its log was emptied: emptied as the server restarts")
