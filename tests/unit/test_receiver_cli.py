"""`python -m sandbox.receiver`'s command line, as the README runs it (`--port 9000`): a port
it cannot take is one line and exit 2, as `python -m sandbox` says it (it was a traceback)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

from tests.processes import run_on_a_taken_port, run_to_end

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    return run_to_end(
        [sys.executable, "-m", "sandbox.receiver", "--secret", SECRET, *args], ROOT, env, 30
    )


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    port, done = run_on_a_taken_port(run)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
