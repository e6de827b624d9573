"""The report spool (agent/spool.py) on its own: files it cannot read, and its bound."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from agent.spool import ReportSpool
from agent.worker import spool_max_age_s
from common.contracts import AgentReport
from common.settings import settings_from_env

pytestmark = pytest.mark.usefixtures("no_network")

REPORT = AgentReport(call_id="call-1", seq=0, kind="answered", at=1.0).to_json()


def test_a_spooled_file_is_read_back_whole(tmp_path: Path) -> None:
    spool = ReportSpool(tmp_path / "spool")
    assert spool.save("http://127.0.0.1:1/agent/reports", "call-1", [REPORT])
    (item,) = spool.load()
    assert (item.url, item.call_id, [r.seq for r in item.reports]) == (
        "http://127.0.0.1:1/agent/reports",
        "call-1",
        [0],
    )
    assert (item.path.stat().st_mode & 0o777) == 0o600


def test_a_file_it_cannot_read_is_removed_not_kept_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It may hold a transcript that can never be sent: a `.bad` copy stayed for good.
    spool = ReportSpool(tmp_path)
    (tmp_path / "0001-1-x.json").write_text(
        '{"url": "x", "call_id": "c", "reports": [{"text": "my card is 4111"}]}'
    )
    assert spool.save("http://127.0.0.1:1/agent/reports", "call-1", [REPORT])
    assert [s.call_id for s in spool.load()] == ["call-1"]
    # Its name alone: the spool's own file is named by the clock in nanoseconds, which may
    # hold "0001" (a full run failed on 01796500018935327400-...json).
    assert [p.name for p in tmp_path.iterdir() if "0001-1-x" in p.name] == []
    # None of its reports reads as one: each is said, and the file goes.
    assert "call c: a report #? (1 of 1 in 0001-1-x.json) is not sent" in caplog.text
    assert "4111" not in caplog.text


def test_a_full_spool_keeps_no_more(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    spool = ReportSpool(tmp_path, max_files=2)
    assert spool.save("http://h/agent/reports", "call-1", [REPORT])
    assert spool.save("http://h/agent/reports", "call-1", [REPORT])
    assert not spool.save("http://h/agent/reports", "call-1", [REPORT])
    assert len(list(spool.load())) == 2
    assert "call call-1: 1 reports not kept for later: the report spool is full" in caplog.text


def test_a_do_not_call_request_removed_unsent_is_an_error_naming_its_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The callee asked not to be called again, and the report saying so never reached the
    server before the retention removed it: only the generic WARNING said a file went, and
    the callee was called again unless someone listed the number by hand."""
    spool = ReportSpool(tmp_path, max_age_s=86400)
    url = "http://127.0.0.1:1/agent/reports"
    dnc = AgentReport(call_id="call-2", seq=3, kind="do_not_call", at=9.0).to_json()
    answered = AgentReport(call_id="call-2", seq=0, kind="answered", at=1.0).to_json()
    asked = spool.save(url, "call-2", [answered, dnc])
    other = spool.save(url, "call-1", [REPORT])
    assert asked is not None and other is not None
    two_days_ago = time.time() - 2 * 86400
    for path in (asked, other):
        os.utime(path, (two_days_ago, two_days_ago))
    assert list(spool.load()) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "call call-2: the callee asked not to be called again, and the server was not told"
        " (its report was kept undelivered past the retention): put the call's number on the"
        " do-not-call list with POST /dnc"
    ]


def test_a_do_not_call_request_in_a_file_that_cannot_be_read_is_an_error_naming_its_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spooled file whose other report no longer reads (written by another release, or
    damaged) is removed as unreadable: its do_not_call report with it, said only as 'its
    reports are lost'; and one old enough for the retention hid the do_not_call so too."""
    spool = ReportSpool(tmp_path, max_age_s=86400)
    dnc = json.loads(AgentReport(call_id="call-3", seq=3, kind="do_not_call", at=9.0).to_json())
    for call_id, age_s in (("call-3", 0.0), ("call-4", 2 * 86400)):
        # No "url": a report that no longer reads loses only itself (test_GZ_spool_one_bad_report)
        doc = {"call_id": call_id, "reports": [{"kind": "answered"}, dnc]}
        path = tmp_path / f"0000000000000000000{call_id[-1]}-1-abc.json"
        path.write_text(json.dumps(doc))
        os.utime(path, (time.time() - age_s, time.time() - age_s))
    assert list(spool.load()) == []
    errors = [r.getMessage() for r in caplog.records if "asked not to be called" in r.getMessage()]
    assert sorted(e.split(":")[0] for e in errors) == ["call call-3", "call call-4"], errors


def test_a_file_nested_too_deep_to_read_is_removed_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spooled file of JSON nested past the parser's depth (damaged, or not the worker's
    own): RecursionError went out of the pass, which stopped there every 10 s, leaving the
    files after it unsent for good."""
    spool = ReportSpool(tmp_path)
    deep = tmp_path / "00000000000000000001-1-abc.json"
    deep.write_text(
        '{"url": "x", "call_id": "call-9", "reports": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    after = spool.save("http://127.0.0.1:1/agent/reports", "call-1", [REPORT])
    assert [s.call_id for s in spool.load()] == ["call-1"]
    assert not deep.exists() and after is not None and after.exists()
    assert f"{deep.name} cannot be read (RecursionError)" in caplog.text


def test_a_file_left_half_written_by_a_killed_job_is_removed(tmp_path: Path) -> None:
    # A job killed between writing its `.tmp` and renaming it left the transcript there
    # for good; one being written now (recent) is left to its writer.
    spool = ReportSpool(tmp_path)
    old = tmp_path / ".00000000000000000001-1-abc.tmp"
    old.write_text('{"url": "x", "call_id": "call-1", "reports": [{"text": "Hi, this is Zelda')
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    fresh = tmp_path / ".00000000000000000002-2-abc.tmp"
    fresh.write_text("{")
    assert list(spool.load()) == []
    assert not old.exists()
    assert fresh.exists()


def test_a_file_older_than_the_retention_is_removed_unsent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The server away for good: the transcript stayed on the agent's host as long as the
    # worker ran, past CALL_DATA_RETENTION_DAYS (by then the server keeps none of it).
    spool = ReportSpool(tmp_path, max_age_s=86400)
    old = spool.save("http://127.0.0.1:1/agent/reports", "call-1", [REPORT])
    young = spool.save("http://127.0.0.1:1/agent/reports", "call-2", [REPORT])
    assert old is not None and young is not None
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert [s.call_id for s in spool.load()] == ["call-2"]
    assert not old.exists()
    assert f"{old.name} removed unsent" in caplog.text


def test_the_worker_keeps_spooled_reports_for_the_retention_an_hour_at_least() -> None:
    settings = settings_from_env({"CALL_DATA_RETENTION_DAYS": "2"}, config_file_read=False)
    assert spool_max_age_s(settings) == 2 * 86400
    settings = settings_from_env({"CALL_DATA_RETENTION_DAYS": "0"}, config_file_read=False)
    assert spool_max_age_s(settings) == 3600
