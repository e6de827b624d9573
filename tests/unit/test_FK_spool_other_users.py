"""The report spool never sends a file another user wrote into it.

`ReportSpool` makes AGENT_REPORT_SPOOL_DIR 0700 only when it creates it: one made before,
writable by other users (by hand under a umask of 0, or a path under /tmp that another user
made first), was used as it was. Every file in it was sent by the worker's next pass, signed
with the worker's LiveKit key and secret with a room grant for whatever call the file named,
to whatever URL it named: a user of the agent's host could have the worker post a report of
their own making (a `do_not_call`, a transcript, a final report's analysis) for any call to
the calls server, or hand them a valid signature for it at a URL of theirs. Seen here: a file
written as `nobody` was posted to the report server, signed, as the call it named. Now a file
not owned by the worker's user is not sent (an ERROR, once), and `agent start` warns of a
spool directory that is not private.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import AgentReport
from tests.processes import forked_as_nobody, reachable_directory
from tests.unit.test_agent_reporting import CALL, KEY, SECRET, ReportServer, server

__all__ = ["server"]  # fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants a file as another user")

QUICK = RetryPolicy(first_delay_s=0.05, max_delay_s=0.05, attempt_timeout_s=2, deadline_s=1)


def planted(url: str) -> bytes:
    forged = AgentReport(call_id=CALL, seq=7, kind="do_not_call", at=1_800_000_000.0)
    return b'{"url": "%s", "call_id": "%s", "reports": [%s]}' % (
        url.encode(),
        CALL.encode(),
        forged.to_json(),
    )


def plant_as_nobody(directory: Path, data: bytes) -> Path:
    path = directory / "00000000000000000001-1-planted.json"

    def write() -> str:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        return "ok"

    assert forked_as_nobody(write) == "ok"
    assert path.stat().st_uid != os.geteuid()
    return path


async def test_a_file_another_user_wrote_is_not_signed_nor_sent(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    with reachable_directory() as top:
        directory = top / "agent-reports"
        directory.mkdir()
        directory.chmod(0o777)  # made before the worker, open to every user
        spool = ReportSpool(directory)
        own = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_800_000_000.0)
        assert spool.save(server.url, CALL, [own.to_json()]) is not None
        foreign = plant_as_nobody(directory, planted(server.url))

        assert await resend(spool, KEY, SECRET, retry=QUICK, timeout_s=5) == 1
        assert await resend(spool, KEY, SECRET, retry=QUICK, timeout_s=5) == 0

        assert [(r.seq, r.kind) for r in server.reports] == [(0, "answered")]
        assert foreign.exists()  # not the worker's to remove either
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1  # once, not every pass
        assert f"{foreign.name} is not sent: it was written by another user" in errors[0]


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_agent_start_warns_of_a_spool_directory_others_can_write(mode: int) -> None:
    with reachable_directory() as top:
        directory = top / "agent-reports"
        directory.mkdir()
        directory.chmod(mode)
        problem = ReportSpool(directory).problem()
        assert problem is not None
        assert "AGENT_REPORT_SPOOL_DIR is not private to this user" in problem
        assert f"mode {mode:04o}" in problem


def test_a_private_spool_directory_is_no_problem(tmp_path: Path) -> None:
    assert ReportSpool(tmp_path / "made-now").problem() is None
    made_before = tmp_path / "made-before"
    made_before.mkdir(mode=0o755)
    made_before.chmod(0o755)
    assert ReportSpool(made_before).problem() is None


async def test_files_a_mapped_user_wrote_are_still_sent(
    server: ReportServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root writing to an NFS export with root_squash writes as nobody: its files are owned by
    # another uid than its own, and are still its jobs' (a probe file tells which uid).
    spool = ReportSpool(tmp_path / "spool")
    own = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_800_000_000.0)
    assert spool.save(server.url, CALL, [own.to_json()]) is not None
    monkeypatch.setattr(os, "geteuid", lambda: 12345)  # as if the files came out as root's

    assert spool.problem() is None
    assert await resend(spool, KEY, SECRET, retry=QUICK, timeout_s=5) == 1
    assert [(r.seq, r.kind) for r in server.reports] == [(0, "answered")]


async def test_a_link_another_user_planted_is_not_followed(
    server: ReportServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A link is owned by whoever made it, but `stat` answers for what it points to: a link
    # of nobody's to a file of root's (here a report file elsewhere; /dev/zero would have
    # been read for ever, the worker's loop blocked) passed for one of the worker's files.
    elsewhere = tmp_path / "roots-own.json"  # under pytest's 0700 directory: root's alone
    elsewhere.write_bytes(planted(server.url))
    with reachable_directory() as top:
        directory = top / "agent-reports"
        directory.mkdir()
        directory.chmod(0o777)
        link = directory / "00000000000000000002-1-linked.json"

        def make_link() -> str:
            os.symlink(elsewhere, link)
            return "ok"

        assert forked_as_nobody(make_link) == "ok"
        spool = ReportSpool(directory)

        assert await resend(spool, KEY, SECRET, retry=QUICK, timeout_s=5) == 0

        assert server.reports == []
        assert link.is_symlink() and elsewhere.exists()
        assert f"{link.name} is not sent: it is not a regular file" in caplog.text
