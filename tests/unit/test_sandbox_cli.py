"""`python -m sandbox`'s command line: bad values are usage errors, a port it cannot take is
one line and exit 2, and the public development keys beyond loopback are warned of (probe
AO: a traceback each, and no word).

The usage errors but one of each command line are checked by its `main()` in this process
(run_here); the others, a real process's exit code and log lines, in processes (run)."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import importlib
import io
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.processes import run_on_a_taken_port, run_to_end

ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})}
    return run_to_end([sys.executable, "-m", "sandbox", *args], cwd, clean, timeout=30)


def run_here(
    module: str, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """What `python -m <module> <args>` (as `run`) answers for a usage error, from its
    `main(args)` in this process (a process start saved): the same arguments, environment and
    working directory; the exit code of its SystemExit, stdout and stderr. The environment,
    the working directory and the root logger (main's logging.basicConfig) are restored
    after; getting as far as serving fails the test instead of serving in it."""
    cli = importlib.import_module("sandbox.__main__" if module == "sandbox" else module)
    serving = "_serve" if module == "sandbox" else "serve"

    async def no_serving(*_args: object) -> None:
        raise AssertionError(f"python -m {module} {' '.join(args)} got as far as serving")

    root = logging.getLogger()
    saved_environ, saved_handlers, saved_level = dict(os.environ), root.handlers[:], root.level
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update({"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})})
    try:
        with (
            mock.patch.object(cli, serving, no_serving),
            contextlib.chdir(cwd),
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            pytest.raises(SystemExit) as exited,
        ):
            cli.main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert isinstance(exited.value.code, int), exited.value.code
    argv = [sys.executable, "-m", module, *args]
    return subprocess.CompletedProcess(
        argv, exited.value.code, stdout.getvalue(), stderr.getvalue()
    )


RECEIVER_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize("module", ["sandbox", "sandbox.receiver"])
@pytest.mark.parametrize("port", ["99999", "-1", "abc"])
def test_a_port_out_of_range_is_a_usage_error(module: str, port: str) -> None:
    """Both command lines check --port with one function (sandbox.util.port_argument): out of
    range, the bind failed in a traceback."""
    args = ["--secret", RECEIVER_SECRET] if module == "sandbox.receiver" else []
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if port == "abc":  # one usage error of each command line in a process of its own
        done = run_to_end([sys.executable, "-m", module, *args, "--port", port], ROOT, clean, 30)
    else:
        done = run_here(module, *args, "--port", port)
    assert done.returncode == 2
    said = f"argument --port: must be between 0 and 65535 (0: any free port), got '{port}'"
    assert said in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("scale", ["nan", "inf", "-1", "1001"])
def test_a_time_scale_out_of_range_is_a_usage_error(scale: str) -> None:
    """SANDBOX_TIME_SCALE's bounds: `nan` was taken, and every call the sandbox played then
    stayed `dialing` for good."""
    done = run_here("sandbox", "--time-scale", scale)
    assert done.returncode == 2
    assert "--time-scale must be a number from 0 to 1000" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    port, done = run_on_a_taken_port(functools.partial(run, env={"TZ": "Asia/Kolkata"}))
    after = dt.datetime.now(dt.UTC)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    # Its time in UTC, as the server's lines (Kolkata's local time was written, unlabelled)
    (line,) = [line for line in done.stderr.splitlines() if "cannot listen" in line]
    stamp = re.match(r"(\S+Z) CRITICAL ", line)
    assert stamp is not None, line
    assert before <= dt.datetime.fromisoformat(stamp[1]) <= after, line


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


def test_its_keys_are_read_from_dotenv_as_the_server_reads_them(tmp_path: Path) -> None:
    """A .env beside it holds the keys the server signs its requests with: read by the server
    and not by the sandbox, every request was 401 (probe AU)."""
    (tmp_path / ".env").write_text(
        "LIVEKIT_API_KEY=APIk\nLIVEKIT_API_SECRET=a-secret-of-this-deployment-0123\n"
    )
    with socket.socket() as taken:  # a port it cannot take: it stops right after the warning
        taken.bind(("0.0.0.0", 0))  # noqa: S104 - the case under test
        taken.listen()
        port = str(taken.getsockname()[1])
        keyed = run("--host", "0.0.0.0", "--port", port, cwd=tmp_path)  # noqa: S104
        (tmp_path / ".env").write_text('LIVEKIT_API_SECRET="never closed\n')
        broken = run("--port", port, cwd=tmp_path)
    assert keyed.returncode == 2, keyed.stderr  # the port taken
    assert "with the public development keys" not in keyed.stderr
    assert "no --webhook-url: this sandbox sends no LiveKit webhook" in keyed.stderr
    assert broken.returncode == 2
    assert "line 1 (LIVEKIT_API_SECRET) cannot be parsed" in broken.stderr
    assert "never closed" not in broken.stderr and "Traceback" not in broken.stderr


@pytest.mark.parametrize(
    "url", ["localhost:8000/webhooks/livekit", "127.0.0.1:8000", "ftp://127.0.0.1/x", "http://"]
)
def test_a_webhook_url_that_is_no_http_url_is_a_usage_error(url: str) -> None:
    """It was taken, then every webhook of every call failed and was dropped after 5 attempts
    (a WARNING each, 'NonHttpUrlClientError'): no call settled by its webhooks."""
    done = run_here("sandbox", "--port", "0", "--webhook-url", url)
    assert done.returncode == 2
    assert "--webhook-url must be an http:// or https:// URL with a host" in done.stderr
    assert "Traceback" not in done.stderr
