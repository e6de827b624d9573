"""A report sender of the sandbox's agent that failed as it closed left its task's exception
to asyncio's garbage collection: "Task exception was never retrieved", an ERROR with no call
or sender named, seen now and then in loaded test runs. It is taken, and said, at once."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from agent.reporting import ReportSender
from sandbox.agent import AgentReports


async def test_a_sender_failing_as_it_closes_is_said_not_left_unretrieved(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = AgentReports(api_key="APIretire", api_secret="x" * 32, time_scale=1.0)
    await reports.start()
    sender = reports.sender("call-0000000000aa", "http://127.0.0.1:9/agent/reports")
    assert sender is not None

    async def broken(self: ReportSender, timeout: float = 0.0) -> None:
        raise RuntimeError("the send loop broke")

    monkeypatch.setattr(ReportSender, "aclose", broken)
    caplog.set_level(logging.ERROR)
    reports.retire(sender)
    while reports.pending():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # the done callback
    gc.collect()
    said = [r.getMessage() for r in caplog.records]
    assert any("report sender failed closing" in m and "send loop broke" in m for m in said)
    assert not [m for m in said if "never retrieved" in m]
    assert reports.delivered == 0
    await reports.close()
