"""A spooled file larger than any job writes is not read whole.

The worker's resend pass read each spooled file whole (`file.read()`), then, finding it
unreadable, whole again to look for a do_not_call report: a 1 GB file (a disk fault, a file
of zeros after a crash) took the worker to 4.1 GB of memory and held its event loop, and its
live calls, for 20 s. Now a file past MAX_FILE_BYTES (above the largest a job writes: a turn
report for each of the transcript's turns, each as long as a turn may be) is removed unread,
with an ERROR that says its size; what a job writes still fits.
"""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
from pathlib import Path

import pytest

from agent import spool as spool_module
from agent.spool import ReportSpool
from common.contracts import (
    MAX_REPORT_BYTES,
    MAX_TURN_CHARS,
    MAX_TURNS,
    AgentReport,
    TranscriptTurn,
)

pytestmark = pytest.mark.usefixtures("no_network")

CALL = "call-0123456789ab"
URL = "http://127.0.0.1:1/agent/reports"


def _huge_file(directory: Path, size: int) -> Path:
    """A spooled file's name, a spooled file's start, then zeros (sparse: no disk used)."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "00000000000000000001-1-0123456789abcdef.json"
    with open(path, "wb") as out:
        out.write(json.dumps({"url": URL, "call_id": CALL})[:-1].encode() + b', "reports": [')
        out.truncate(size)
    os.chmod(path, 0o600)
    return path


def test_a_file_of_hundreds_of_megabytes_is_removed_unread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = 400 * 1024 * 1024
    path = _huge_file(tmp_path / "spool", size)
    tracemalloc.start()
    try:
        loaded = list(ReportSpool(tmp_path / "spool").load())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert loaded == []
    assert peak < 8 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated to read it"
    assert not path.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"report spool: {path.name} cannot be read ({size} bytes, more than the"
        f" {spool_module.MAX_FILE_BYTES} a job writes); removed, its reports are lost"
    ]


def test_a_file_that_grows_past_the_bound_as_it_is_read_is_not_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = ReportSpool(tmp_path / "spool")
    path = spool.save(
        URL, CALL, [AgentReport(call_id=CALL, seq=0, kind="answered", at=1.0).to_json()]
    )
    assert path is not None
    monkeypatch.setattr(spool_module, "MAX_FILE_BYTES", 10 * 1024)
    real_fstat = os.fstat

    def small_then(fd: int) -> os.stat_result:  # its size taken before it grew
        info = real_fstat(fd)
        with open(path, "ab") as out:
            out.write(b" " * 20 * 1024)
        return info

    monkeypatch.setattr(os, "fstat", small_then)
    assert list(spool.load()) == []
    assert not path.exists()


def test_the_largest_file_a_job_writes_fits(tmp_path: Path) -> None:
    # The longest turn there can be, written the longest way: control characters as \\u0001.
    turn = TranscriptTurn(role="callee", text="\x01" * MAX_TURN_CHARS, at_s=86400.0)
    body = AgentReport(call_id="c" * 100, seq=1_000_000, kind="turn", at=1.0, turn=turn).to_json()
    assert len(body) > 6 * MAX_TURN_CHARS
    assert MAX_TURNS * (len(body) + 1) + 4 * (MAX_REPORT_BYTES + 1) < spool_module.MAX_FILE_BYTES
    # And a real spooled file of many turns is read back.
    spool = ReportSpool(tmp_path / "spool")
    bodies = [body] * 50
    assert spool.save(URL, CALL, bodies) is not None
    (loaded,) = spool.load()
    assert len(loaded.reports) == 50


def test_a_file_too_large_to_read_back_is_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(spool_module, "MAX_FILE_BYTES", 1024)
    spool = ReportSpool(tmp_path / "spool")
    report = AgentReport(
        call_id=CALL,
        seq=0,
        kind="turn",
        at=1.0,
        turn=TranscriptTurn(role="agent", text="x" * 2000, at_s=1.0),
    ).to_json()
    assert spool.save(URL, CALL, [report]) is None
    assert list((tmp_path / "spool").iterdir()) == []
    assert "report spool cannot be written" in caplog.text
