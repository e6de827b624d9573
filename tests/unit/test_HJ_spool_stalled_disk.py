"""A report spool whose disk stalls (a network volume, an NFS server gone) holds no more than
its own pass: the worker's event loop goes on.

The spool's pass runs on the worker's own event loop, beside livekit-agents' pings of every
job process. It listed, read and removed its files on that loop: a stalled read held the loop
as long as the disk stalled, and livekit-agents kills each job process whose pong it has not
read for 60 s. Seen with the real worker (`build_server`, its processes warmed, its loop held
65 s): every one of its processes was killed as 'unresponsive' when the loop ran again, each
of them a live call cut off mid-sentence. The pass now does its file work on a thread."""

from __future__ import annotations

import asyncio
import itertools
import threading
from pathlib import Path

import pytest

from agent import spool as spool_module
from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import AgentReport
from tests.helpers import serving
from tests.unit.test_agent_reporting import CALL, KEY, SECRET, ReportServer

QUICK = RetryPolicy(first_delay_s=0.05, max_delay_s=0.05, attempt_timeout_s=2, deadline_s=1)
STALL_S = 2.0  # how long the disk holds the read (the test's bound on a stall)


async def test_a_stalled_spool_read_leaves_the_worker_loop_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = ReportServer()
    async with serving(state.handle) as base:
        state.url = f"{base}/agent/reports"
        spool = ReportSpool(tmp_path / "spool")
        report = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_700_000_000.0)
        assert spool.save(state.url, CALL, [report.to_json()]) is not None

        stalled, released = threading.Event(), threading.Event()
        read = ReportSpool._read

        def stalling_read(self: ReportSpool, path: Path) -> bytes | None:
            stalled.set()
            released.wait(STALL_S)  # the disk answers once released, or after STALL_S
            return read(self, path)

        monkeypatch.setattr(spool_module.ReportSpool, "_read", stalling_read)
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def heartbeat() -> None:  # the loop's other work: its pings, its job requests
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.02)

        beating = asyncio.create_task(heartbeat())
        passing = asyncio.create_task(resend(spool, KEY, SECRET, retry=QUICK, timeout_s=5))
        while not stalled.is_set():
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the read held meanwhile
        released.set()
        assert await asyncio.wait_for(passing, 10) == 1
        beating.cancel()
        gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
        assert max(gaps) < STALL_S / 2, f"the loop stood still {max(gaps):.1f} s"
    assert [r.kind for r in state.reports] == ["answered"]
    assert list((tmp_path / "spool").glob("*.json")) == []
