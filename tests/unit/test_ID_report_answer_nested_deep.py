"""An answer to a report POST nested too deeply for Python's JSON parser (`[` 200,000 times:
a proxy's or a broken server's body, with a 500 or a 200) raised RecursionError out of the
sender, which only ValueError was caught for: a traceback, and the batch neither delivered,
retried nor refused. A pass of the spool then removed its file, logging "call ...'s 2
reports delivered", a do_not_call among them that never reached the server, with no ERROR
saying so. Found posting spooled reports to a fake server answering that. Now such an
answer reads as no JSON: a 500 is retried (the file kept for the next pass), a 200 is
refused as not the calls server's answer, as any other body that is not its JSON."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import AgentReport
from tests.helpers import serving

QUICK = RetryPolicy(first_delay_s=0.01, max_delay_s=0.01, attempt_timeout_s=2.0, deadline_s=0.05)
NESTED = "[" * 200_000


@pytest.fixture
async def answering() -> AsyncIterator[dict[str, object]]:
    """A report URL whose answer's status is `state["status"]`, its body NESTED."""
    state: dict[str, object] = {"status": 500, "posts": 0}

    async def reports(request: web.Request) -> web.Response:
        await request.read()
        state["posts"] = int(str(state["posts"])) + 1
        return web.Response(status=int(str(state["status"])), text=NESTED)

    async with serving(reports, "/agent/reports", "POST") as base:
        state["url"] = f"{base}/agent/reports"
        yield state


def _spooled(spool: ReportSpool, url: str) -> None:
    bodies = [
        AgentReport(call_id="call-9", seq=0, kind="answered", at=1.0).to_json(),
        AgentReport(call_id="call-9", seq=1, kind="do_not_call", at=2.0).to_json(),
    ]
    assert spool.save(url, "call-9", bodies) is not None


async def test_a_500_nested_too_deep_is_retried_and_its_file_kept(
    tmp_path: Path, answering: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    spool = ReportSpool(tmp_path)
    _spooled(spool, str(answering["url"]))
    assert await resend(spool, "key", "secret" * 6, retry=QUICK, timeout_s=2.0) == 0
    assert int(str(answering["posts"])) >= 1
    (item,) = spool.load()  # kept for the next pass: the server may be back by then
    assert [r.seq for r in item.reports] == [0, 1]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
    assert not any(r.exc_info for r in caplog.records)
    assert "reports delivered" not in caplog.text


async def test_a_200_nested_too_deep_is_refused_not_counted_delivered(
    tmp_path: Path, answering: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    answering["status"] = 200
    spool = ReportSpool(tmp_path)
    _spooled(spool, str(answering["url"]))
    with caplog.at_level(logging.INFO):
        assert await resend(spool, "key", "secret" * 6, retry=QUICK, timeout_s=2.0) == 1
    assert not any(r.exc_info for r in caplog.records)
    assert "reports delivered" not in caplog.text
    assert "not the calls server's answer to a report" in caplog.text
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("call call-9: the callee asked not to be called again" in e for e in errors), errors
