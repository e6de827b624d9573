"""A report the agent's spool could not write for lack of space leaves no half-written file.

Seen with AGENT_REPORT_SPOOL_DIR on a 64 KiB tmpfs: a final report of 100 KB was refused
"No space left on device", as it must be, but its half-written `.<name>.tmp` stayed, holding
the disk's last 64 KiB (and part of the callee's transcript) until the stale-file sweep 10
minutes later: a turn report of 30 bytes, which would have fit, was refused too, and every
report after it. The half-written file is now removed as the save fails.
"""

from __future__ import annotations

from pathlib import Path

from agent.spool import ReportSpool
from tests.helpers import files_capped_at

URL = "http://127.0.0.1:8000/agent/reports"


def test_a_save_refused_for_space_leaves_no_half_written_file(tmp_path: Path) -> None:
    spool = ReportSpool(tmp_path / "reports")
    final = [b'{"kind": "final", "summary": "' + b"a" * 100_000 + b'"}']
    with files_capped_at(64 * 1024):
        assert spool.save(URL, "call-0123456789ab", final) is None
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == []
    saved = spool.save(URL, "call-0123456789ac", [b'{"kind": "turn", "text": "hi"}'])
    assert saved is not None
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [saved.name]
