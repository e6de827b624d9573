"""`python -m sandbox`'s command line: bad values are usage errors, a port it cannot take is
one line and exit 2, and the public development keys beyond loopback are warned of (probe
AO: a traceback each, and no word)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import run_to_end

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", **(env or {})}
    return run_to_end([sys.executable, "-m", "sandbox", *args], ROOT, clean, timeout=30)


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_a_port_out_of_range_is_a_usage_error(port: str) -> None:
    done = run("--port", port)
    assert done.returncode == 2
    assert "--port must be between 0 and 65535" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run("--port", str(port))
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_development_keys_beyond_loopback_are_warned_of() -> None:
    with socket.socket() as taken:  # a port it cannot take: it stops right after the warning
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - the case under test
        taken.listen()
        port = taken.getsockname()[1]
        done = run("--host", "0.0.0.0", "--port", str(port))  # noqa: S104
        keyed = run(
            "--host",
            "0.0.0.0",  # noqa: S104
            "--port",
            str(port),
            env={
                "LIVEKIT_API_KEY": "APIk",
                "LIVEKIT_API_SECRET": "a-secret-of-this-deployment-0123",
            },
        )
    assert "with the public development keys" in done.stderr
    assert "with the public development keys" not in keyed.stderr
