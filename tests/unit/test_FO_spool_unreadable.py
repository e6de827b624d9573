"""A report spool whose directory cannot be read (AGENT_REPORT_SPOOL_DIR a file, or a path
through one; a directory of another user's, mode 000): each pass of the worker's resend loop,
every 10 s, logged 'report spool: a pass failed' with a 20-line NotADirectoryError traceback,
8,640 a day, saying neither which setting nor what to do. Now one line naming the directory and
why, once a minute with how many more, and one line when it can be read again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agent.spool import ReportSpool, resend_loop
from common.contracts import AgentReport

pytestmark = pytest.mark.usefixtures("no_network")

CALL = "call-0123456789ab"
REPORT = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_800_000_000.0).to_json()


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_spool_path_that_is_a_file_is_said_in_one_line_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    where = tmp_path / "spool"
    where.write_text("not a directory")
    loop = asyncio.create_task(resend_loop(ReportSpool(where), "key", "secret", interval_s=0.01))
    await asyncio.sleep(0.3)  # some 30 passes
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    errors = _errors(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is None
    line = errors[0].getMessage()
    assert f"AGENT_REPORT_SPOOL_DIR ({where}) cannot be read (Not a directory)" in line, line
    assert "a pass failed" not in caplog.text


def test_the_spool_is_read_again_once_its_directory_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agent.spool")
    where = tmp_path / "spool"
    where.write_text("not a directory")
    spool = ReportSpool(where)
    assert list(spool.load()) == []
    assert list(spool.load()) == []
    assert len(_errors(caplog)) == 1

    where.unlink()
    assert spool.save("http://127.0.0.1:1/agent/reports", CALL, [REPORT]) is not None
    assert [s.call_id for s in spool.load()] == [CALL]
    assert f"report spool: AGENT_REPORT_SPOOL_DIR ({where}) can be read again" in caplog.text

    # Broken again: said at once, not held back as a repeat of the first outage.
    for path in where.iterdir():
        path.unlink()
    where.rmdir()
    where.write_text("not a directory")
    assert list(spool.load()) == []
    assert len(_errors(caplog)) == 2
