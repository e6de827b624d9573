"""A spooled file with one report that no longer reads (5d1bf34) is read again on every pass
of the spool (every 10 s) while its server is away: each pass logged the same ERROR for the
same report, and, for a do-not-call request, told the operator again to put the number on
the list: an hour's outage was 360 ERRORs for one report. Said once per file now; the file's
other reports are still sent once the server is back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import AgentReport, CallReport

QUICK = RetryPolicy(first_delay_s=0.01, max_delay_s=0.01, attempt_timeout_s=0.5, deadline_s=0.05)


async def test_a_bad_report_is_said_once_while_its_server_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = ReportSpool(tmp_path)
    url = "http://127.0.0.1:1/agent/reports"  # nobody listens: the server is away
    answered = AgentReport(call_id="call-7", seq=0, kind="answered", at=1.0).to_json()
    dnc = json.loads(AgentReport(call_id="call-7", seq=1, kind="do_not_call", at=9.0).to_json())
    dnc["at"] = float("1e300")
    assert spool.save(url, "call-7", [answered, json.dumps(dnc).encode()]) is not None

    for _ in range(3):
        assert await resend(spool, "key", "secret" * 6, retry=QUICK, timeout_s=1.0) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([e for e in errors if "is not sent, the others are" in e]) == 1, errors
    assert len([e for e in errors if "asked not to be called again" in e]) == 1, errors
    (item,) = spool.load()  # still there, its good report kept for the server's return
    assert [r.seq for r in item.reports] == [0]


def test_the_bound_a_report_broke_is_said_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`at` past 2100-01-01 (MAX_REPORT_AT, a check a release added): the ERROR said
    `at: Input should be less than or equal to ••••••4800`, the bound masked as if it were a
    phone number. The report's values are still not shown."""
    spool = ReportSpool(tmp_path)
    turn = json.loads(AgentReport(call_id="call-8", seq=0, kind="answered", at=1.0).to_json())
    turn["at"] = 5_000_000_000.0
    assert spool.save("http://127.0.0.1:1/r", "call-8", [json.dumps(turn).encode()])
    assert list(spool.load()) == []
    assert "(at: Input should be less than or equal to 4102444800)" in caplog.text
    assert "5000000000" not in caplog.text


def test_a_lost_final_report_says_what_the_call_will_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The final report the one that no longer reads: the ERROR said only that it was not
    sent; it says the call's report_status stays pending, then reads unavailable."""
    spool = ReportSpool(tmp_path)
    answered = AgentReport(call_id="call-9", seq=0, kind="answered", at=1.0).to_json()
    report = CallReport(summary="The callee agreed.")
    final = json.loads(
        AgentReport(call_id="call-9", seq=1, kind="final", at=9.0, final=report).to_json()
    )
    final["at"] = 5_000_000_000.0
    assert spool.save("http://127.0.0.1:1/r", "call-9", [answered, json.dumps(final).encode()])
    (item,) = spool.load()
    assert [r.seq for r in item.reports] == [0]
    assert "call call-9: its final report lost, the call's report_status stays pending" in (
        caplog.text
    )
