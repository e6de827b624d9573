"""A report POST that failed with an exception the sender does not expect (a bug, a library
raising what it did not before: `ValueError` for a URL aiohttp will not post to) was logged
with its traceback and then counted nowhere: neither delivered, refused nor dropped. A pass
of the spool then removed its file logging "call ...'s 2 reports delivered", a do_not_call
among them that never reached the server, and a job said nothing of the do_not_call lost.
Found with a report URL holding credentials (aiohttp: "Cannot combine AUTHORIZATION
header with ... credentials encoded in URL"). Such a batch is now dropped: a spool pass keeps
its file for the next, and a do_not_call in it is said lost."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from agent.reporting import ReportSender, RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import AgentReport

QUICK = RetryPolicy(first_delay_s=0.01, max_delay_s=0.01, attempt_timeout_s=0.5, deadline_s=0.05)


async def _a_bug(*_args: Any) -> None:
    raise RuntimeError("a bug")


async def test_a_spooled_file_whose_post_raised_is_kept_not_said_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = ReportSpool(tmp_path)
    bodies = [
        AgentReport(call_id="call-5", seq=0, kind="answered", at=1.0).to_json(),
        AgentReport(call_id="call-5", seq=1, kind="do_not_call", at=2.0).to_json(),
    ]
    assert spool.save("http://127.0.0.1:1/agent/reports", "call-5", bodies) is not None
    monkeypatch.setattr(ReportSender, "_attempt", _a_bug)
    with caplog.at_level(logging.INFO):
        assert await resend(spool, "key", "secret" * 6, retry=QUICK, timeout_s=1.0) == 0
    assert "reports delivered" not in caplog.text
    (item,) = spool.load()  # kept for the next pass
    assert [r.seq for r in item.reports] == [0, 1]


async def test_a_do_not_call_whose_post_raised_is_said_lost(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ReportSender, "_attempt", _a_bug)
    sender = ReportSender(
        "http://127.0.0.1:1/agent/reports", "call-6", "key", "secret" * 6, retry=QUICK
    )
    sender.do_not_call(1.0)
    await sender.aclose(1.0)
    assert sender.dropped == [0]
    assert "call call-6: the callee asked not to be called again" in caplog.text
