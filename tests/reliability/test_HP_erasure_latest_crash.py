"""An erasure on request whose server is SIGKILLed part way, on either side of the database's
commit, leaves nothing of the callee in config.json, and the retry after the restart erases
the call.

config.json's top level (the seed's latest config, get_config_value("caller_name")) was put
back to the defaults after the database erasure: a server killed between the two left the
callee's name and instructions there (until a restarted server's reaper guessed, by the time
it was written, which call wrote it). It is now reset before the erasure is written, so a
kill after the commit finds it reset already, and one before the commit leaves the call for
the retry to erase. Real processes: the server on its embedded sandbox, restarted on the same
database (calls.db, or PostgreSQL's) and config.json.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import config_files_holding
from tests.processes import ROOT, ServerProcess, call_of, placed_and_completed
from tests.reliability.conftest import Figures, LogGuard

NAME = "Ysolde Brannigan"
INSTRUCTIONS = "Remind Ysolde Brannigan that her passport renewal is due."
KILLED = """
import os, signal, sys
sys.path.insert(0, {root!r})
from common.storage.postgres import PostgresCallStore
from common.storage.sql import SqlCallStore
from common.storage.sqlite import SqliteCallStore

async def erase_then_die(self, *, before_erasing=None, **asked):
    async def first_then_die(*batch):
        await before_erasing(*batch)
        if {before_commit!r}:
            os.kill(os.getpid(), signal.SIGKILL)
    await SqlCallStore.erase_calls_now(self, before_erasing=first_then_die, **asked)
    os.kill(os.getpid(), signal.SIGKILL)

SqliteCallStore.erase_calls_now = erase_then_die
PostgresCallStore.erase_calls_now = erase_then_die
import server
server.main()
"""


def holding_the_callee(directory: Path) -> list[str]:
    return config_files_holding(directory, NAME.encode(), b"passport")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
@pytest.mark.parametrize("killed", ["before the commit", "after the commit"])
async def test_an_erasure_killed_part_way_leaves_config_json_without_the_callee(
    tmp_path: Path,
    processes: list[ServerProcess],
    figures: Figures,
    log_guard: LogGuard,
    request: pytest.FixtureRequest,
    killed: str,
    database: str,
) -> None:
    env = {
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "SANDBOX_TIME_SCALE": "0.01",
        "CALLS_SETTLE_GRACE_S": "0",
    }
    if database == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_dsn")
    body = {"phone_number": "+14155557701", "name": NAME, "dynamic_instruction": INSTRUCTIONS}
    launcher = KILLED.format(root=str(ROOT), before_commit=killed == "before the commit")
    async with aiohttp.ClientSession() as session:
        first = ServerProcess(tmp_path, "first", env, launcher=launcher)
        processes.append(first)
        await first.wait_ready(session)
        call_id = await placed_and_completed(session, first, body)
        assert holding_the_callee(tmp_path) == ["config.json"]  # its top level names her
        try:
            async with session.post(f"{first.url}/calls/{call_id}/erase") as resp:
                answered: object = resp.status
        except aiohttp.ClientError:
            answered = None  # no answer: the client retries
        await asyncio.to_thread(first.proc.wait, 10)
        assert answered is None, f"answered {answered} instead of dying:\n{first.logs()}"
        # Before any restart (and its reaper): config.json was erased first. It kept her
        # name and instructions at its top level when killed after the commit.
        assert holding_the_callee(tmp_path) == []

        restarted = ServerProcess(tmp_path, "restarted", env, port=first.port)
        processes.append(restarted)
        await restarted.wait_ready(session)
        async with session.post(f"{restarted.url}/calls/{call_id}/erase") as resp:
            assert resp.status == 200, await resp.text()
            retried = await resp.json()
        erased = await call_of(session, restarted, call_id)
        for server in (first, restarted):
            log_guard.scan(server.logs())
    assert retried["call_ids"] == [call_id]
    assert erased["name"] == "", erased
    assert holding_the_callee(tmp_path) == []
    for name in ("calls.db", "calls.db-wal"):
        data = (tmp_path / name).read_bytes() if (tmp_path / name).exists() else b""
        assert NAME.encode() not in data and b"passport" not in data, name
    figures.add(
        f"erasure on request SIGKILLed {killed} ({database}): config.json held nothing of"
        " the callee"
    )
