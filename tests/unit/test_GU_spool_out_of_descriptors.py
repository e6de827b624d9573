"""A spooled file the worker cannot open for the moment is kept for the next pass.

A worker busy with calls can run out of file descriptors (EMFILE) while a resend pass goes
through the spool: it posts one file, its calls open sockets meanwhile, and the next file's
`open` fails. That file was taken for unreadable and removed, "cannot be read (OSError);
removed, its reports are lost", and a do_not_call in it went with no ERROR naming its call
(the file could not be read for that either): the callee who had asked not to be called was
called again. Seen here in a real process under RLIMIT_NOFILE 64, as the test does. Now the
file is kept (a WARNING, once) and the next pass sends it. So is one past the retention
(CALL_DATA_RETENTION_DAYS), which was removed unread, with no do-not-call ERROR (aaf409d's):
the next pass reads it, removes it, and names the call.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.spool import ReportSpool
from common.contracts import AgentReport

CALL = "call-0123456789ab"

# Run apart: the descriptor limit is the process's, not to be lowered under pytest's workers.
_SCRIPT = r"""
import json, os, resource, sys, time
from pathlib import Path
from agent.spool import ReportSpool
from common.contracts import AgentReport

spool = ReportSpool(Path(sys.argv[1]), max_age_s=3600)
paths = []
for n, kind in enumerate(["answered", "do_not_call"]):
    call = f"call-0123456789a{n}"
    report = AgentReport(call_id=call, seq=0, kind=kind, at=1_800_000_000.0).to_json()
    paths.append(spool.save("http://127.0.0.1:1/agent/reports", call, [report]))
    time.sleep(0.01)  # oldest first: the do_not_call's file is the second
if sys.argv[2] == "expired":  # the do_not_call's file kept past the retention
    os.utime(paths[1], (time.time() - 7200, time.time() - 7200))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
passing = spool.load()
first = next(passing).call_id
held = []  # the calls' sockets, opened while the first file is posted
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
rest = [s.call_id for s in passing]
for fd in held:
    os.close(fd)
again = [(s.call_id, [r.kind for r in s.reports]) for s in spool.load()]
left = sorted(os.listdir(sys.argv[1]))
print(json.dumps({"first": first, "rest": rest, "again": again, "left": len(left)}))
"""


def _passes(tmp_path: Path, age: str) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "spool"), age],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def test_a_file_not_opened_for_want_of_descriptors_is_kept_and_sent_next_pass(
    tmp_path: Path,
) -> None:
    seen, stderr = _passes(tmp_path, "fresh")
    assert seen["first"] == "call-0123456789a0"
    assert seen["rest"] == []  # not this pass: no descriptor to open it with
    assert ["call-0123456789a1", ["do_not_call"]] in seen["again"], (seen, stderr)
    assert "removed, its reports are lost" not in stderr
    assert "could not be opened (Too many open files); kept" in stderr


def test_a_do_not_call_past_the_retention_not_opened_is_named_when_it_is_removed(
    tmp_path: Path,
) -> None:
    seen, stderr = _passes(tmp_path, "expired")
    assert seen["rest"] == []
    assert seen["left"] == 1  # the answered one's, not sent here (nobody listens)
    assert "could not be opened (Too many open files); kept" in stderr
    assert "removed unsent" in stderr
    dnc = "call call-0123456789a1: the callee asked not to be called again"
    assert dnc in stderr, stderr


def test_a_file_that_cannot_be_opened_for_itself_is_still_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a want of resources keeps a file: one refused for itself (EACCES) is removed as
    unreadable, as before, not kept for good."""
    spool = ReportSpool(tmp_path / "spool")
    report = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_800_000_000.0).to_json()
    path = spool.save("http://127.0.0.1:1/agent/reports", CALL, [report])
    assert path is not None
    real_open = os.open

    def refusing(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(file) == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    assert list(spool.load()) == []
    assert not path.exists()
