"""test_HG_commit_synced.py where strace may not trace (a container's seccomp, YAMA's
ptrace_scope): it skips. strace said so and stopped, and the test's clean-up then killed its
process group, gone with it: ProcessLookupError, the skip reported as a failure. Where the
server itself cannot start under strace, it fails and says why, not skipped.

Run in a pytest of its own, with an `strace` on PATH that refuses as the real one does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.processes import ROOT

REFUSING = """#!/bin/sh
echo "strace: test_ptrace_get_syscall_info: PTRACE_TRACEME: Operation not permitted" >&2
exit 1
"""


def run_synced_test(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            str(ROOT / "tests" / "reliability" / "test_HG_commit_synced.py"),
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_commit_sync_test_skips_where_strace_may_not_trace(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "strace"
    fake.parent.mkdir()
    fake.write_text(REFUSING)
    fake.chmod(0o755)
    done = run_synced_test(tmp_path, PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert "1 skipped" in done.stdout, done.stdout[-3000:]
    assert "ProcessLookupError" not in done.stdout
    assert "PTRACE_TRACEME" in done.stdout  # the skip says why


def test_the_commit_sync_test_fails_where_the_server_cannot_start(tmp_path: Path) -> None:
    done = run_synced_test(tmp_path, CALL_MAX_DURATION_S="not-a-number")
    assert "1 failed" in done.stdout, done.stdout[-3000:]
    assert "the server stopped as it started" in done.stdout
    assert "CALL_MAX_DURATION_S" in done.stdout
