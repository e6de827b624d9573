"""The directories the server, the seed's functions and the agent's spool make (config.json's,
calls.db's, AGENT_REPORT_SPOOL_DIR's, and every missing one above them) are never writable by
other users, whatever the umask.

Path.mkdir(parents=True) made them 0777 less the umask: a server started under umask 000 with
CONFIG_PATH=/srv/calls/data/config.json made /srv/calls and /srv/calls/data 0777, and then any
user of the machine could rename config.json away and put a file of their own (0666) in its
place: the next call's write kept that file's mode and owner, as a file that exists keeps
them, and wrote every live call's name, number and instructions into it, with no line saying
so. Seen with the real server run as root and `nobody` swapping the file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from agent.spool import ReportSpool
from common import update_config
from tests.processes import SERVER_LAUNCHER, ServerProcess

UMASK_000 = f"import os; os.umask(0); {SERVER_LAUNCHER}"


def _writable_by_others(top: Path, below: Path) -> list[str]:
    """The directories from `below` up to `top` (itself included) that users other than their
    owner may write."""
    found = []
    for directory in [below, *below.parents]:
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{directory} {mode:04o}")
        if directory == top:
            break
    return found


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_a_server_under_umask_000_makes_its_directories_for_itself_alone_to_write(
    tmp_path: Path,
) -> None:
    config = tmp_path / "state" / "config" / "config.json"
    database = tmp_path / "state" / "db" / "calls.db"
    server = ServerProcess(
        tmp_path,
        "server",
        {
            "CONFIG_PATH": str(config),
            "CALLS_DB_PATH": str(database),
            "SANDBOX_TIME_SCALE": "0",
        },
        launcher=UMASK_000,
    )
    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_ready(session)
            body = {"phone_number": "+14155550123", "name": "Alice Smith"}
            async with session.post(f"{server.url}/calls/outbound", json=body) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        server.stop()
    assert json.loads(config.read_text())["caller_name"] == "Alice Smith"
    assert _writable_by_others(tmp_path / "state", config.parent) == []
    assert _writable_by_others(tmp_path / "state", database.parent) == []
    # what they hold stays as before: the files their owner's alone
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(database.stat().st_mode) == 0o600


@pytest.mark.usefixtures("umask_000")
def test_the_seeds_update_config_under_umask_000_makes_no_directory_others_may_write(
    tmp_path: Path,
) -> None:
    config = tmp_path / "a" / "b" / "config.json"
    previous = update_config._default_store
    update_config.configure_store(config)
    try:
        update_config.update_config(caller_name="Bob")
    finally:
        update_config._default_store = previous
    assert json.loads(config.read_text())["caller_name"] == "Bob"
    assert _writable_by_others(tmp_path / "a", config.parent) == []


@pytest.mark.usefixtures("umask_000")
def test_the_report_spools_parents_under_umask_000_are_not_writable_by_others(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "var" / "agent" / "reports"
    spool = ReportSpool(directory)
    assert spool.problem() is None
    assert spool.save("http://127.0.0.1:1/agent/reports", "call-1", [b"{}"]) is not None
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert _writable_by_others(tmp_path / "var", directory) == []
