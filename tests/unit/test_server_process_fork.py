"""ServerProcess forks its servers from a Python that has imported the server
(tests/processes.py): what such a process sees is what `python -c launcher` saw."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests import processes
from tests.processes import ROOT, ForkedProcess, ServerProcess, run_to_end

# What a launcher's process sees of how it was started, written to its log as JSON.
SEEN = f"""
import json, os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
import server
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
print(json.dumps({{
    "cwd": os.getcwd(),
    "environ": dict(os.environ),
    "fds": [fd for fd in fds if os.path.exists(f"/proc/self/fd/{{fd}}")],
    "stdin": os.readlink("/proc/self/fd/0"),
    "argv": sys.argv,
    "main": __name__,
    "signals": [str(signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM,
                                                   signal.SIGCHLD, signal.SIGPIPE)],
    "umask": os.umask(0o022),
    "threads": __import__("threading").active_count(),
    "__main__": sorted(vars(sys.modules["__main__"])),
    "__main__ is the launcher's": vars(sys.modules["__main__"]) is globals(),
}}))
sys.stdout.flush()
sys.exit(int(os.environ["EXIT_WITH"]))
"""


def _seen(log: Path) -> dict[str, object]:
    seen: dict[str, object] = json.loads(log.read_text().splitlines()[-1])
    return seen


def test_a_forked_server_process_sees_what_a_fresh_one_did(tmp_path: Path) -> None:
    forked_dir, fresh_dir = tmp_path / "forked", tmp_path / "fresh"
    forked_dir.mkdir()
    fresh_dir.mkdir()
    server = ServerProcess(forked_dir, "seen", {"EXIT_WITH": "3"}, launcher=SEEN)
    try:
        assert isinstance(server.proc, ForkedProcess)
        assert server.proc.wait(timeout=30) == 3
        assert server.proc.poll() == 3
        forked = _seen(server.log_path)
    finally:
        server.stop()
    # The same launcher as ServerProcess ran it before: its own interpreter, same environment.
    env = dict(forked["environ"])  # type: ignore[call-overload]
    with open(fresh_dir / "seen.log", "ab") as log:
        fresh_proc = subprocess.run(
            [sys.executable, "-c", SEEN],
            cwd=fresh_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        )
    assert fresh_proc.returncode == 3
    fresh = _seen(fresh_dir / "seen.log")
    assert forked["cwd"] == str(forked_dir) and fresh["cwd"] == str(fresh_dir)
    del forked["cwd"], fresh["cwd"]
    assert forked == fresh
    assert forked["fds"] == [0, 1, 2] and forked["stdin"] == "/dev/null"


def test_a_killed_forked_server_process_ends_by_its_signal(tmp_path: Path) -> None:
    hangs = f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); import server; time.sleep(60)"
    server = ServerProcess(tmp_path, "killed", {}, launcher=hangs)
    try:
        assert server.proc.poll() is None
        try:
            server.proc.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
        else:
            raise AssertionError("a process asleep for a minute ended")
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=10) == -signal.SIGKILL
        server.proc.kill()  # reaped: nothing is signalled
    finally:
        server.stop()


def test_a_server_process_with_its_own_python_settings_is_started_afresh(
    tmp_path: Path,
) -> None:
    """PYTHON* and locale variables are read as Python starts: a forked child, started long
    before, would not have them."""
    server = ServerProcess(
        tmp_path, "afresh", {"EXIT_WITH": "0", "PYTHONTZPATH": "/nowhere"}, launcher=SEEN
    )
    try:
        assert isinstance(server.proc, subprocess.Popen)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()


def test_server_py_run_to_its_end_forked_answers_as_run_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_to_end forks `python server.py`: the exit code, stdout and stderr of the same
    runs afresh (its help, its one line for a refused setting and for an argument)."""
    forked_runs: list[object] = []

    def recorded(*args: Any, **kwargs: Any) -> ForkedProcess | None:
        forked_runs.append(forking(*args, **kwargs))
        return forked_runs[-1]  # type: ignore[return-value]

    forking = processes._forked_if_alike
    monkeypatch.setattr(processes, "_forked_if_alike", recorded)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    env.update(SANDBOX_PORT="0", CONFIG_PATH=str(tmp_path / "config.json"))
    for args, more in (["--help"], {}), ([], {"PORT": "abc"}), (["--port", "8001"], {}):
        argv = [sys.executable, str(ROOT / "server.py"), *args]
        forked = run_to_end(argv, tmp_path, env | more, timeout=30)
        fresh = subprocess.run(
            argv, cwd=tmp_path, env=env | more, capture_output=True, text=True, check=False
        )
        assert (forked.returncode, forked.stdout, forked.stderr) == (
            fresh.returncode,
            fresh.stdout,
            fresh.stderr,
        ), args
        assert forked.returncode in (0, 2) and (forked.stdout or forked.stderr), args
    assert len(forked_runs) == 3
    assert all(isinstance(run, ForkedProcess) for run in forked_runs)


# What importing the server made of variables it read then: aiohttp's choice of its C
# extensions, and the certificates of the TLS context it made (its sessions' default).
IMPORTED = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r})
import server
from aiohttp import connector, helpers
print(json.dumps([helpers.NO_EXTENSIONS, connector._SSL_CONTEXT_VERIFIED.cert_store_stats()]))
"""


@pytest.mark.parametrize("name", ["AIOHTTP_NO_EXTENSIONS", "SSL_CERT_FILE"])
def test_a_server_process_given_what_the_servers_import_reads_sees_it(
    tmp_path: Path, name: str
) -> None:
    """A forked child imported the server long before, under its forker's environment: one
    given AIOHTTP_NO_EXTENSIONS went on with aiohttp's C parser, one given SSL_CERT_FILE
    (a test's own certificate authority) with the system's certificates."""
    no_certificates = tmp_path / "none.pem"
    no_certificates.write_text("")
    value = {"AIOHTTP_NO_EXTENSIONS": "1", "SSL_CERT_FILE": str(no_certificates)}[name]
    server = ServerProcess(tmp_path, "imported", {name: value}, launcher=IMPORTED)
    try:
        assert server.proc.wait(timeout=60) == 0, server.logs()
        seen = json.loads(server.logs().splitlines()[-1])
    finally:
        server.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith(processes._OWN_PREFIXES)}
    fresh = subprocess.run(
        [sys.executable, "-c", IMPORTED],
        cwd=tmp_path,
        env=env | {name: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert seen == json.loads(fresh.stdout.splitlines()[-1])
    no_extensions, certificates = seen
    assert no_extensions if name == "AIOHTTP_NO_EXTENSIONS" else certificates["x509_ca"] == 0


def test_a_server_process_is_forked_only_from_a_forker_started_as_it_would_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's forker starts with the worker's environment of the moment it is first
    needed: within a test that set PYTHONHASHSEED (or LC_ALL, PYTHONUTF8...), its later
    server processes, started without it, were forked from an interpreter started with it."""
    flags = "import sys; print(sys.flags.hash_randomization)"
    before = processes._forker
    monkeypatch.setattr(processes, "_forker", None)
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    seen = []
    try:
        for name in ("with", "without"):
            server = ServerProcess(tmp_path, name, {}, launcher=flags)
            try:
                assert server.proc.wait(timeout=60) == 0, server.logs()
                seen.append(server.logs().split())
            finally:
                server.stop()
            monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    finally:
        if processes._forker not in (None, before):
            processes._forker.stop()
    assert seen == [["0"], ["1"]]


def test_a_server_process_has_the_umask_and_limits_the_worker_has_as_it_starts(
    tmp_path: Path,
) -> None:
    """A forked child had its forker's umask and resource limits, the worker's when it first
    needed a server: a test's os.umask(0o077) or RLIMIT_CORE, which a server started
    afresh took on, was not taken, and the first test to need a server gave its own to every
    later one."""
    import resource

    said = "import os, resource; print(os.umask(0), resource.getrlimit(resource.RLIMIT_CORE))"
    first = ServerProcess(tmp_path, "first", {}, launcher=said)  # the forker is up by now
    first.proc.wait(timeout=60)
    first.stop()
    umask = os.umask(0o077)
    core = resource.getrlimit(resource.RLIMIT_CORE)
    soft = 1 << 20 if core[1] == resource.RLIM_INFINITY else min(core[1], 1 << 20)
    resource.setrlimit(resource.RLIMIT_CORE, (soft, core[1]))
    try:
        server = ServerProcess(tmp_path, "server", {}, launcher=said)
        try:
            assert server.proc.wait(timeout=60) == 0, server.logs()
        finally:
            server.stop()
    finally:
        os.umask(umask)
        resource.setrlimit(resource.RLIMIT_CORE, core)
    assert server.logs().strip() == f"{0o077} ({soft}, {core[1]})"


def test_a_forked_server_process_waited_on_by_two_threads_is_reaped_once(tmp_path: Path) -> None:
    """Two threads waiting on one forked process (a test's own wait beside a fixture's stop)
    both saw its pidfd readable and both asked the forker to reap it: the second reap of a pid
    already reaped ended the forker, and every later server of the worker with it. As
    Popen's, one thread reaps; the other gets the same code."""
    ends = "import time; time.sleep(0.3)"
    for n in range(5):  # the two must wake together; each run gives them a chance
        proc = _forked(ends, tmp_path, f"{n}.log")
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def wait(
            p: ForkedProcess = proc, b: threading.Barrier = barrier, got: list[int] = codes
        ) -> None:
            b.wait()
            got.append(p.wait(timeout=10))

        threads = [threading.Thread(target=wait) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=15)
        assert codes == [0, 0]
    assert _forked("pass", tmp_path, "after.log").wait(timeout=10) == 0  # the forker lives


def _forked(launcher: str, tmp_path: Path, name: str) -> ForkedProcess:
    with (tmp_path / name).open("ab") as log:
        proc = processes.python_c(launcher, tmp_path, dict(os.environ), tmp_path / name, log)
    assert isinstance(proc, ForkedProcess)
    return proc
