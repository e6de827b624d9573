"""A spooled file in which one report no longer reads as a report (an upgraded worker that
validates more than the release that spooled it, a report an earlier release let through):
the whole file was removed as unreadable, the call's answer, turns and final report with it,
and the log named only the file. Now the reports that read are delivered, and the one that
does not is left out with an ERROR naming the call, the report and why."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import REPORTS_PATH, AgentReport, CallReport, TranscriptTurn
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_webhooks import place, quiet_app

ANSWERED = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=10, deadline_s=10)


async def test_one_report_that_no_longer_reads_loses_only_itself(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    hello = TranscriptTurn(role="agent", text="Hello Ann, this is the clinic.", at_s=0.4)
    now = time.time()
    answered = AgentReport(call_id=call_id, seq=0, kind="answered", at=now)
    turn = json.loads(
        AgentReport(call_id=call_id, seq=1, kind="turn", at=now, turn=hello).to_json()
    )
    turn["at"] = 5_000_000_000.0  # past 2100: refused by this release's validation
    turn["turn"]["text"] = "my card is 4111 1111 1111 1111"
    final = AgentReport(
        call_id=call_id,
        seq=2,
        kind="final",
        at=now,
        final=CallReport(transcript=[hello], summary="Greeted Ann.", ended_by="agent"),
    )
    spool = ReportSpool(tmp_path / "agent-reports")
    url = str(client.make_url(REPORTS_PATH))
    bodies = [answered.to_json(), json.dumps(turn).encode(), final.to_json()]
    assert spool.save(url, call_id, bodies) is not None

    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=ANSWERED, timeout_s=5.0) == 1
    assert list(spool.directory.iterdir()) == []
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "in_progress" and call["report_status"] == "complete"
    assert call["summary"] == "Greeted Ann." and call["transcript"] == [hello.model_dump()]

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"report spool: call {call_id}: turn report #1 (2 of 3 in "), errors
    assert "is not sent, the others are: it does not read as a report (at: " in errors[0]
    assert "4111" not in caplog.text


def test_a_file_of_which_no_report_reads_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = ReportSpool(tmp_path)
    path = tmp_path / "00000000000000000001-1-abc.json"
    path.write_text(
        json.dumps({"url": "http://127.0.0.1:1/r", "call_id": "call-5", "reports": [{"seq": 0}]})
    )
    assert list(spool.load()) == []
    assert not path.exists()
    assert "report spool: call call-5: a report #0 (1 of 1 in" in caplog.text


def test_a_do_not_call_request_that_no_longer_reads_is_an_error_naming_its_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = ReportSpool(tmp_path)
    url = "http://127.0.0.1:1/agent/reports"
    answered = AgentReport(call_id="call-6", seq=0, kind="answered", at=1.0).to_json()
    dnc = json.loads(AgentReport(call_id="call-6", seq=1, kind="do_not_call", at=9.0).to_json())
    dnc["at"] = float("1e300")
    assert spool.save(url, "call-6", [answered, json.dumps(dnc).encode()]) is not None
    (item,) = spool.load()
    assert [r.seq for r in item.reports] == [0]
    assert "call call-6: the callee asked not to be called again" in caplog.text
