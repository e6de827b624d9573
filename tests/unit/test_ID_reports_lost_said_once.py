"""A job whose reports could neither be delivered (the calls server away) nor kept (the
report spool unwritable: a full disk, a file in its place) said each one lost in a line of
its own at shutdown: 51 ERRORs for a call of 50 turns, thousands for a long one, burying
the two lines that said why. Found closing a sender with 50 turns queued, its server down
and its spool a file. One line now says them all, their kinds counted."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.reporting import ReportSender, RetryPolicy
from agent.spool import ReportSpool
from common.contracts import TranscriptTurn

QUICK = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=0.5, deadline_s=0.2)


async def test_reports_lost_at_shutdown_are_said_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    in_its_place = tmp_path / "spool"
    in_its_place.write_text("not a directory")
    sender = ReportSender(
        "http://127.0.0.1:1/agent/reports",  # nobody listens: the server is away
        "call-ab12cd34ef56",
        "key",
        "secret" * 6,
        retry=QUICK,
        linger_s=0,
        spool=ReportSpool(in_its_place),
        spool_after_s=0.05,
    )
    sender.answered(1.0)
    for index in range(50):
        sender.turn(TranscriptTurn(role="agent", text=f"turn {index}", at_s=2.0 + index))
    await sender.aclose(0.3)

    assert len(sender.dropped) == 51
    records = [r for r in caplog.records if "still pending after" in r.getMessage()]
    lost = [r.getMessage() for r in records]
    assert lost == [
        "call call-ab12cd34ef56: 51 reports #0-#50 (answered, 50 turn) not delivered: still"
        " pending after 0 s at shutdown"
    ], lost
    assert records[0].levelno == logging.ERROR
    # Why they could not be kept, naming the file in the spool's place ("File exists" did not).
    assert (
        f"the report spool cannot be written (AGENT_REPORT_SPOOL_DIR {in_its_place}:"
        f" {in_its_place} is a file, not a directory)"
    ) in caplog.text
