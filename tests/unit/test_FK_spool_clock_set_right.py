"""The report spool ages its files by how long they have been there, not by a wall clock that
was set right meanwhile.

An agent host whose clock is far behind signs every report with a token the server finds
expired (401): its jobs keep retrying, then spool them, as README says, "the reports arrive
once the two agree again". But once its clock was set right (NTP reaching the host, an
operator fixing it), the worker's next pass found every such file's time (written by that
clock) older than the retention (an hour with CALL_DATA_RETENTION_DAYS=0, 30 days by default)
and removed it unsent: 'removed unsent: its reports were kept longer than
CALL_DATA_RETENTION_DAYS', after seconds in the spool. A clock that was ahead kept them past
the retention by as much. Now a file ages by the monotonic clock from the pass that first saw
it (every 10 s: about when it was written).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.spool import ReportSpool
from common.contracts import AgentReport

URL = "http://127.0.0.1:1/agent/reports"
REPORT = AgentReport(call_id="call-1", seq=0, kind="answered", at=1_800_000_000.0).to_json()
HOUR = 3600.0
YEAR = 365 * 86400.0


def clock_off_by(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> None:
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset_s)


def test_a_file_spooled_while_the_clock_was_behind_is_kept_once_it_is_set_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = ReportSpool(tmp_path, max_age_s=HOUR)  # CALL_DATA_RETENTION_DAYS=0
    path = spool.save(URL, "call-1", [REPORT])
    assert path is not None
    with monkeypatch.context() as behind:
        clock_off_by(behind, -YEAR)
        written = time.time()
        os.utime(path, (written, written))  # as the job wrote it, by that clock
        assert [s.call_id for s in spool.load()] == ["call-1"]  # the worker's next pass

    # The clock set right: the file has been in the spool for seconds, not a year.
    assert [s.call_id for s in spool.load()] == ["call-1"]
    assert path.exists()
    assert "removed unsent" not in caplog.text


def test_a_file_spooled_while_the_clock_was_ahead_goes_after_the_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = ReportSpool(tmp_path, max_age_s=HOUR)
    path = spool.save(URL, "call-1", [REPORT])
    assert path is not None
    with monkeypatch.context() as ahead:
        clock_off_by(ahead, YEAR)
        written = time.time()
        os.utime(path, (written, written))
        assert [s.call_id for s in spool.load()] == ["call-1"]

    assert [s.call_id for s in spool.load()] == ["call-1"]  # set right: still young
    later = time.monotonic() + HOUR + 60
    monkeypatch.setattr(time, "monotonic", lambda: later)  # over an hour in the spool
    monkeypatch.setattr(time, "time", lambda: written - YEAR + HOUR + 60)
    assert list(spool.load()) == []
    assert not path.exists()


def test_a_file_already_old_when_first_seen_is_removed(tmp_path: Path) -> None:
    # (a worker started again after its reports waited longer than the retention)
    spool = ReportSpool(tmp_path, max_age_s=HOUR)
    path = spool.save(URL, "call-1", [REPORT])
    assert path is not None
    old = time.time() - 2 * HOUR
    os.utime(path, (old, old))
    assert list(spool.load()) == []
    assert not path.exists()
