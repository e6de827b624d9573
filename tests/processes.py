"""Real server processes for tests: `server.main()` on a free loopback port, logs in a file.

Several reliability and multi-instance tests run the server as users do (its own process,
configured only by environment variables, killable with SIGKILL); this is their one helper.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import random
import resource
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
# The variables tests set themselves; none may leak in from the developer's shell.
_OWN_PREFIXES = ("LIVEKIT_", "CALLS_", "SANDBOX_", "DATABASE_", "CONFIG_", "SIP_", "PUBLIC_")
SERVER_LAUNCHER = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import server; server.main()"


def settling_sooner(seconds: float) -> str:
    """A launcher for a server that settles what a killed server left unfinished after
    `seconds`, not the bounds set for a real LiveKit and real agents: a call written but never
    dialled (PLACEMENT_BOUND_S, a minute), one whose room is gone with its webhooks lost
    (ROOM_CHECK_AFTER_S, a minute: LiveKit's webhook retries last about 15 s), one whose
    room_finished came late (REPORTS_RETRY_S, 40 s, for the agent's retried report). For a
    sandbox whose clock runs faster (its webhook retries over in a second or two) and whose
    agent retries a report from 0.5 s on: a test killing a server waited out those bounds
    whenever the kill left such a call. A placement settled meanwhile is never dialled."""
    return (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import common.calls.service as s;"
        f" s.PLACEMENT_BOUND_S = s.ROOM_CHECK_AFTER_S = s.REPORTS_RETRY_S = {seconds!r};"
        " import server; server.main()"
    )


def retrying_sooner(launcher: str = SERVER_LAUNCHER) -> str:
    """`launcher` for a server that takes a campaign's retry.delay_s of 0, not only a minute
    on: a test whose busy numbers are retried across a killed server cannot move a server
    process's clock through that minute, as an in-process test moves its campaign clock
    (ShiftedClock), and waited it out."""
    return (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import common.campaigns.request as r;"
        f" r.DELAY_RANGE = (0.0, r.DELAY_RANGE[1]); {launcher}"
    )


def webhook_claims_sooner(request_timeout_s: float) -> str:
    """A launcher for a server whose customer-webhook sends time out after
    `request_timeout_s`, not 15 s, and so whose delivery claims last that and 5 s (or
    CLAIM_LEASE_S), not 20 s: what a killed server claimed is taken over that much sooner.
    For receivers on loopback that answer at once."""
    return (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import common.notify.deliveries as d;"
        f" d.REQUEST_TIMEOUT_S = {request_timeout_s!r}; import server; server.main()"
    )


def _ephemeral_ports() -> range:
    """The ports the kernel gives out for outgoing connections (and for bind(0))."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _worker_share(ports: range, worker: str, count: str) -> range:
    """The part of `ports` that pytest-xdist worker `worker` ("gw1") of `count` draws from:
    two workers never hand out the same port. The whole range outside xdist."""
    try:
        index, total = int(worker.removeprefix("gw")), int(count)
    except ValueError:
        return ports
    if not 0 <= index < total:
        return ports
    size = len(ports) // total
    return ports[index * size : (index + 1) * size]


# Ports tests listen on are drawn below the ephemeral range: a port found free there by bind(0)
# could be given to one of the many outgoing connections before the test bound it (a test
# failed with "Address already in use" now and then, and leaked the socket it had made).
# Each test worker has its own share, and hands out a port once: a port is free when drawn
# but bound only when the server process has started, a second or two later, and another
# worker's app once took it in that time. The test's server then failed to bind and exited,
# while its readiness check and its requests were answered by that other app (CI, stop 35).
_LISTEN_PORTS = _worker_share(
    range(20000, min(_ephemeral_ports().start, 32768)),
    os.environ.get("PYTEST_XDIST_WORKER", ""),
    os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""),
)
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now and not handed out before in this test process,
    outside the ephemeral range when there is room (each test worker draws at random from its
    own share of it; `start_app` retries a taken one)."""
    for _ in range(100) if len(_LISTEN_PORTS) >= 1000 else ():
        port = random.choice(_LISTEN_PORTS)  # noqa: S311 - not a secret
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


# The parent of the server processes of a test worker: a Python that has imported the server,
# and forks one child per server process, which takes its working directory, environment, log,
# and the umask and resource limits the worker has now (a fixture's os.umask, a test's setrlimit),
# then runs its launcher as `python -c` would (the imports before `import server` in a
# launcher patch what is looked up as the server runs, as they did before it was imported).
# A fresh interpreter spent ~0.7 s of CPU importing the server before it served: some 80
# server processes a run, 6 workers' time. It reaps a child only when asked to (the worker
# has seen it end on its pidfd), so that a pid signalled is never another process's.
_FORKER = f"""
import json, os, resource, sys, threading, time
sys.path.insert(0, {str(ROOT)!r})
import server

def serve():
    for line in sys.stdin.buffer:
        asked = json.loads(line)
        if asked["op"] == "reap":
            said = os.waitstatus_to_exitcode(os.waitpid(asked["pid"], 0)[1])
        elif threading.active_count() != 1:
            said = "threads running: " + repr(threading.enumerate())
        else:
            pid = os.fork()
            if pid == 0:
                return asked
            said = pid
        sys.stdout.write(json.dumps(said) + "\\n")
        sys.stdout.flush()
    os._exit(0)

asked = serve()
os.chdir(asked["cwd"])
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
os.dup2(os.open(asked["out"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), 1)
if asked["err"] == asked["out"]:
    os.dup2(1, 2)
else:
    os.dup2(os.open(asked["err"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), 2)
os.closerange(3, os.sysconf("SC_OPEN_MAX"))
os.environ.clear()
os.environ.update(asked["env"])
time.tzset()
del asked["env"]
os.umask(asked["umask"])
for name, limits in asked["limits"].items():
    if resource.getrlimit(getattr(resource, name)) != tuple(limits):
        resource.setrlimit(getattr(resource, name), limits)

def as_python_c():
    # The launcher runs in the __main__ module, as `python -c` runs it, with none of the
    # forker's names left in it.
    code = compile(asked["launcher"], "<string>", "exec")
    main = vars(sys.modules["__main__"])
    for name in [name for name in main if not name.startswith("__")]:
        del main[name]
    return code, main

exec(*as_python_c())
"""

# What Python reads as it starts, and what importing the server reads (the TLS context
# aiohttp makes on import: OpenSSL's SSL_CERT_FILE/DIR, ssl's SSLKEYLOGFILE; the switches to
# pure-Python code of aiohttp, yarl, multidict, frozenlist, propcache; prometheus_client's
# multiprocess mode; pydantic's plugins; protobuf's implementation): a forked child was started
# long ago and imported the server then, so a server process whose environment differs from
# its forker's in one of these is started afresh.
_READ_AT_START = (
    "PYTHON",
    "LANG",
    "LC_",
    "LANGUAGE",
    "SSL_CERT_",
    "SSLKEYLOGFILE",
    "AIOHTTP_",
    "YARL_",
    "MULTIDICT_",
    "FROZENLIST_",
    "PROPCACHE_",
    "PROMETHEUS_",
    "prometheus_multiproc_dir",
    "PYDANTIC_",
    "PROTOCOL_BUFFERS_",
)


def _umask() -> int:
    """This process's umask, read without setting it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask in /proc/self/status")


def _limits() -> dict[str, tuple[int, int]]:
    """This process's resource limits (ulimit), by name."""
    names = (name for name in dir(resource) if name.startswith("RLIMIT_"))
    return {name: resource.getrlimit(getattr(resource, name)) for name in names}


class ForkedProcess:
    """A server process forked by the worker's forker: what tests use of subprocess.Popen."""

    def __init__(self, forker: _Forker, pid: int, args: list[str]) -> None:
        self._forker = forker
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)
        # One thread at a time looks and reaps (as Popen's _waitpid_lock): two that saw the
        # pidfd readable both asked the forker to reap, and the second reap ended the forker.
        self._reaping = threading.Lock()

    def poll(self) -> int | None:
        return self._ended(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._ended(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def _ended(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._reaping.acquire(timeout=-1 if timeout is None else timeout):
            return self.returncode  # another thread is looking: not ended as far as known
        try:
            if self.returncode is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select([self._pidfd], [], [], left)
                if readable:
                    self.returncode = self._forker.reap(self.pid)
                    os.close(self._pidfd)
            return self.returncode
        finally:
            self._reaping.release()

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # not reaped: its pid is still its own
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


class _Forker:
    """The worker's forker process (_FORKER), started when a test first needs a server."""

    def __init__(self) -> None:
        # What it started with: what its children were given of _READ_AT_START.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _FORKER],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def _ask(self, **asked: Any) -> Any:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps(asked).encode() + b"\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        assert line, f"the server forker exited ({self._proc.poll()})"
        return json.loads(line)

    def start(
        self, launcher: str, cwd: Path, env: dict[str, str], out: Path, err: Path
    ) -> ForkedProcess:
        pid = self._ask(
            op="fork",
            launcher=launcher,
            cwd=str(cwd),
            env=env,
            out=str(out),
            err=str(err),
            umask=_umask(),
            limits=_limits(),
        )
        assert isinstance(pid, int), pid
        return ForkedProcess(self, pid, [sys.executable, "-c", launcher])

    def reap(self, pid: int) -> int:
        code: int = self._ask(op="reap", pid=pid)
        return code

    def stop(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=10)


_forker: _Forker | None = None


def _forked_if_alike(
    launcher: str, cwd: Path, env: dict[str, str], log: Path, err: Path | None = None
) -> ForkedProcess | None:
    """`launcher` forked from the worker's forker, its stdout to `log` and its stderr too (or
    to `err`); None (to be started afresh) when `env` differs from the forker's (the worker's
    environment when it first needed one, not now) in what Python reads as it starts or
    importing the server reads (_READ_AT_START)."""
    global _forker
    if _forker is None:
        _forker = _Forker()
    started = _forker.env
    changed = {k for k in env.keys() | started.keys() if env.get(k) != started.get(k)}
    if any(k.startswith(_READ_AT_START) for k in changed):
        return None
    return _forker.start(launcher, cwd, env, log, err or log)


def _as_launcher(argv: list[str]) -> str | None:
    """`argv`'s Python source to run in a forked child, when it is `python server.py ...`
    (sys.argv and sys.path as the script's, runpy.run_path) or `python -m sandbox...`
    (runpy.run_module, as -m); None for any other command."""
    if len(argv) < 2 or argv[0] != sys.executable:
        return None
    if argv[1] == str(ROOT / "server.py"):
        root = str(ROOT)
        return (
            f"import runpy, sys; sys.argv = {argv[1:]!r};"
            f" sys.path[:] = [{root!r}, *(p for p in sys.path if p not in ('', {root!r}))];"
            f" runpy.run_path({argv[1]!r}, run_name='__main__')"
        )
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in ("sandbox", "sandbox.receiver"):
        return (
            f"import runpy, sys; sys.argv = ['-m', *{argv[3:]!r}];"
            f" runpy.run_module({argv[2]!r}, run_name='__main__', alter_sys=True)"
        )
    return None


def python_c(
    launcher: str, cwd: Path, env: dict[str, str], log_path: Path, log: IO[bytes]
) -> subprocess.Popen[bytes] | ForkedProcess:
    """`python -c launcher` in `cwd` with exactly `env`, its stdout and stderr appended to
    `log_path` (open as `log`): forked from the worker's forker, or afresh when `env`
    differs from the forker's in what Python or the server's import reads (_READ_AT_START)."""
    return _forked_or_started([sys.executable, "-c", launcher], launcher, cwd, env, log_path, log)


def _forked_or_started(
    argv: list[str], launcher: str, cwd: Path, env: dict[str, str], log_path: Path, log: IO[bytes]
) -> subprocess.Popen[bytes] | ForkedProcess:
    """`launcher` (`argv`'s Python source) forked, or `argv` started afresh (_forked_if_alike),
    its stdout and stderr appended to `log_path` (open as `log`)."""
    forked = _forked_if_alike(launcher, cwd, env, log_path)
    if forked is not None:
        return forked
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


class ServerProcess:
    """`python server.py` (or `launcher`, Python source) with `env` on a free loopback port.

    It runs in `workdir` (a directory with no .env, so only `env` configures it).
    """

    def __init__(
        self,
        workdir: Path,
        name: str,
        env: dict[str, str],
        *,
        launcher: str = SERVER_LAUNCHER,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        # SANDBOX_PORT 0: the embedded sandbox (when used) on a port of its own, never 7880,
        # which a `make run` on the same machine holds.
        full_env = base | {
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            "SANDBOX_PORT": "0",
        }
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = python_c(launcher, workdir, full_env | env, self.log_path, self._log)

    async def wait_ready(
        self, session: aiohttp.ClientSession, timeout: float = 30, path: str = "/readyz"
    ) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, f"{self.name} exited:\n{self.logs()}"
                try:
                    async with session.get(f"{self.url}{path}") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()
        self._log.close()


class SandboxProcess:
    """`python -m sandbox` on a free loopback port: a LiveKit stand-in several servers share."""

    def __init__(
        self,
        workdir: Path,
        webhook_url: str,
        *,
        api_key: str,
        api_secret: str,
        time_scale: float = 0.01,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "sandbox.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
        env = base | {"LIVEKIT_API_KEY": api_key, "LIVEKIT_API_SECRET": api_secret}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        args = ["--port", str(self.port), "--webhook-url", webhook_url]
        args += ["--time-scale", str(time_scale)]
        # `python -m sandbox`, forked as servers are (ServerProcess): runpy sets sys.argv[0]
        # to sandbox/__main__.py as -m did (_as_launcher).
        argv = [sys.executable, "-m", "sandbox", *args]
        launcher = _as_launcher(argv)
        assert launcher is not None
        self.proc = _forked_or_started(argv, launcher, ROOT, env, self.log_path, self._log)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
                try:
                    async with session.get(self.url) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _text_of(path: Path) -> str:
    """What a process wrote to `path`, decoded as subprocess's text mode does."""
    return path.read_text() if path.exists() else ""


def run_to_end(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`argv` run to its end in `cwd` with exactly `env`, its output kept as text. The server
    and the sandbox are forked, as ServerProcess's are (_as_launcher)."""
    launcher = _as_launcher(argv)
    if launcher is not None:
        with tempfile.TemporaryDirectory(prefix="run-to-end-") as kept:
            out, err = Path(kept, "stdout"), Path(kept, "stderr")
            forked = _forked_if_alike(launcher, cwd, env, out, err)
            if forked is not None:
                try:
                    code = forked.wait(timeout)
                except subprocess.TimeoutExpired:
                    forked.kill()
                    forked.wait()
                    raise subprocess.TimeoutExpired(
                        argv, timeout, _text_of(out), _text_of(err)
                    ) from None
                return subprocess.CompletedProcess(argv, code, _text_of(out), _text_of(err))
    return subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_on_a_taken_port(
    run: Callable[..., subprocess.CompletedProcess[str]],
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`run("--port", <a port something listens on>)` to its end: the port and the result."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        return port, run("--port", str(port))


NOBODY = 65534  # the `nobody` user and group


@contextlib.contextmanager
def reachable_directory(prefix: str = "reachable-") -> Iterator[Path]:
    """A new directory under /tmp that every user may pass through (0755) up to /, removed
    afterwards: pytest's tmp_path is under a 0700 directory of its user's, which `nobody`
    cannot pass and which hides a file's own mode from other users."""
    made = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # noqa: S108 - the point
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made)


def forked_as_nobody(work: Callable[[], str]) -> str:
    """What `work()` says, run in a forked child that became `nobody` (uid, gid, no other
    groups): what a service user meets of root's files. The child imports nothing after the
    fork (root's files may be closed to it)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(writer, work().encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read().decode()
    os.waitpid(pid, 0)
    return said


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -c *args` as `nobody` (setpriv, no supplementary groups, no capabilities), from
    `/`: the checkout must be reachable by it, or the script fails to import the project."""
    return subprocess.run(  # noqa: S603 - fixed arguments
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            sys.executable,
            "-c",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )


async def call_of(
    session: aiohttp.ClientSession, server: ServerProcess, call_id: str
) -> dict[str, Any]:
    """GET /calls/{call_id} of `server`, which must know it."""
    async with session.get(f"{server.url}/calls/{call_id}") as resp:
        assert resp.status == 200, await resp.text()
        call: dict[str, Any] = await resp.json()
        return call


async def placed_and_completed(
    session: aiohttp.ClientSession, server: ServerProcess, body: dict[str, Any]
) -> str:
    """A call placed on `server` and waited for until it is `completed` (20 s at most)."""
    async with session.post(f"{server.url}/calls/outbound", json=body) as resp:
        assert resp.status == 200, await resp.text()
        call_id: str = (await resp.json())["call_id"]
    async with asyncio.timeout(20):
        while (await call_of(session, server, call_id))["status"] != "completed":
            await asyncio.sleep(0.05)
    return call_id
