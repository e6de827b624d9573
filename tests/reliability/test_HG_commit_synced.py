"""A call is on the disk before its number is dialled: calls.db's write-ahead log is synced
(fsync or fdatasync) between the request and the dial, and again before the answer.

The server wrote calls.db with `PRAGMA synchronous=NORMAL`: in WAL mode a commit is then not
synced, only the checkpoint every ~4 MB of log is (2 syncs of calls.db-wal while 10 calls were
placed and settled, none of them before a dial). A SIGKILL loses nothing (the kernel keeps the
written pages), but a loss of the machine (power, a kernel panic, a VM's host failing: "node
loss") loses every commit since the last checkpoint: calls dialled and answered 200 were gone
after the reboot, with their Idempotency-Keys (a client's retry called the person again), the
campaign attempts written "before dialling, so a restart never dials twice", and numbers put
on the do-not-call list. config.json, written alongside, was synced on every write.

Seen with strace on the real server (its own process, a LiveKit stand-in in this test's
process that notes the time of each dial); skipped where strace is missing or may not trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from tests.processes import SERVER_LAUNCHER, free_port

KEY = "APIHGcommitsynced"
SECRET = "hg-commit-synced-livekit-secret-0123456789abcdef"
SYNC = re.compile(r"^\d+ +(\d+\.\d+) f(?:data)?sync\(\d+<([^>]*)>\) = 0")


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url=None, time_scale=0.01)
    await box.start()
    yield box
    await box.stop()


def wal_syncs(trace: Path) -> list[float]:
    """When (Unix seconds: strace -ttt) the traced process synced calls.db-wal."""
    found = []
    for line in trace.read_text(errors="replace").splitlines():
        match = SYNC.match(line)
        if match and match.group(2).endswith("/calls.db-wal"):
            found.append(float(match.group(1)))
    return found


async def test_a_call_is_synced_to_disk_before_its_dial_and_its_answer(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    env |= {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LIVEKIT_URL": sandbox.url,
        "LIVEKIT_API_KEY": KEY,
        "LIVEKIT_API_SECRET": SECRET,
        "SIP_OUTBOUND_TRUNK_ID": "ST_hgcommitsynced",
        "CONFIG_PATH": str(tmp_path / "config.json"),
        "CALLS_DB_PATH": str(tmp_path / "calls.db"),
        "REAPER_INTERVAL_S": "3600",
    }
    dialled_at: list[float] = []

    def note_dial(_body: dict[str, Any]) -> bool:
        dialled_at.append(time.time())
        return False  # no fault: the dial goes on

    sandbox.inject("CreateSIPParticipant", when=note_dial)
    trace = tmp_path / "strace.txt"
    log = tmp_path / "server.log"
    argv = ["strace", "-f", "-y", "-ttt", "-e", "trace=fsync,fdatasync", "-o", str(trace)]
    with open(log, "wb") as out:
        server = subprocess.Popen(  # noqa: S603 - fixed arguments
            [*argv, sys.executable, "-c", SERVER_LAUNCHER],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                if server.poll() is not None:
                    said = log.read_text(errors="replace")
                    # strace's own refusal (no ptrace here: a container's seccomp, YAMA) is a
                    # skip; the server failing to start under it is a failure, not hidden.
                    if re.search(r"^strace: .*(?:ptrace|PTRACE|not permitted)", said, re.M):
                        pytest.skip(f"strace could not trace the server: {said[-300:]}")
                    pytest.fail(f"the server stopped as it started: {said[-2000:]}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                await asyncio.sleep(0.05)
            asked: list[float] = []
            answered: list[float] = []
            for _ in range(3):
                asked.append(time.time())
                body = {"phone_number": "+14155557701", "name": "Synced"}
                async with session.post(
                    f"http://127.0.0.1:{port}/calls/outbound", json=body
                ) as resp:
                    assert resp.status == 200, await resp.text()
                answered.append(time.time())
    finally:
        # strace and the server with it; strace gone already (it could not trace, the server
        # stopped) leaves no group: a ProcessLookupError here turned that skip into an error.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    if "Operation not permitted" in trace.read_text(errors="replace")[:2000]:
        pytest.skip("ptrace is not permitted here")
    syncs = wal_syncs(trace)
    assert len(dialled_at) == 3
    for start, dial, end in zip(asked, dialled_at, answered, strict=True):
        assert any(start <= at <= dial for at in syncs), (start, dial, syncs)
        assert any(dial <= at <= end for at in syncs), (dial, end, syncs)
