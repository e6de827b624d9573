"""A throwaway PostgreSQL cluster for the test suite.

``PostgresCluster`` runs ``initdb`` into a fresh temporary directory and starts a private
postmaster on a free loopback port, so integration tests talk to a real server without any
shared database, Docker, or system service. Nothing here is meant for production use.

Why it looks the way it does:

* PostgreSQL refuses to run as root (``initdb`` and ``postgres`` both exit with "cannot be run
  as root"), and this suite is commonly run as root in containers/CI. So when ``os.geteuid()``
  is 0 every ``initdb``/``pg_ctl`` call is wrapped in ``runuser -u <user> --`` (or ``setpriv``
  when ``runuser`` is missing), dropping to the ``postgres`` system user if it exists, else
  ``nobody``. The temp directory, data directory and unix-socket directory must then be owned
  by that user, hence the ``chown`` calls. As a normal user the binaries run directly.
* ``runuser -u`` execs the command without a shell, so it works for ``nobody`` whose login
  shell is ``nologin``; ``runuser <user> -c ...`` would not.
* TCP uses scram-sha-256 with a random password so DSNs look like real ones (the app's code
  paths for password auth get exercised); the unix socket is ``trust`` and private to the
  cluster's own directory.
* Durability on disk is switched off (``fsync``, ``full_page_writes``, ``initdb --no-sync``):
  the data is disposable and this keeps start-up around a second. ``synchronous_commit``
  stays on, as the server asks of a real database (it warns when it is off): a commit is in
  the kernel's hands before it is answered, so a SIGKILL of PostgreSQL loses none.
* Every wait is bounded: subprocesses get timeouts, ``pg_ctl`` gets ``-t``, polling loops
  have deadlines.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import glob
import math
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit

import asyncpg
import pytest

__all__ = [
    "PgBinaries",
    "PostgresBinariesNotFoundError",
    "PostgresCluster",
    "PostgresClusterError",
    "find_pg_binaries",
    "postgres_cluster",
    "postgres_dsn",
]

ShutdownMode = Literal["smart", "fast", "immediate"]

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_DEFAULT_SEARCH_GLOB = "/usr/lib/postgresql/*/bin"
_LOG_TAIL_LINES = 50

# The cluster's watchdog (a process of its own session, so that a Ctrl-C or a SIGTERM to the
# test run's process group does not reach it): it waits for the end of its stdin, whose write
# end only the process that made the cluster holds. That end comes when the cluster is
# removed (nothing left to do) or when that process died without removing it (a SIGTERM or
# SIGKILL of a pytest worker, a `timeout` stopping the run: atexit does not run then), and it
# stops the postmaster and removes the directory; before, each such run left a postmaster and
# its /tmp/pg-cluster-* behind for good. argv: the cluster's root, pg_ctl, the prefix running
# it as the cluster's user.
_WATCHDOG = """
import os, shutil, signal, subprocess, sys
root, pg_ctl, *prefix = sys.argv[1:]
sys.stdin.buffer.read()
data = os.path.join(root, "data")
try:
    with open(os.path.join(data, "postmaster.pid")) as lock:
        pid = int(lock.readline())
except (OSError, ValueError):
    pid = None
def ours(pid):
    # The cluster's postmaster still (its command line names the data directory), not a
    # process given its pid since: a lock left by a postmaster killed earlier (kill()), or
    # by one pg_ctl just stopped, names a pid the system may have handed to another process.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return data.encode() in cmdline.read().split(b"\\0")
    except OSError:
        return False
if pid is not None and ours(pid):
    stop = [*prefix, pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "10", "stop"]
    try:
        subprocess.run(stop, capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        pass
    if ours(pid):  # a postmaster pg_ctl could not stop (one frozen)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
shutil.rmtree(root, ignore_errors=True)
"""
_T = TypeVar("_T")


class PostgresClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


class PostgresBinariesNotFoundError(PostgresClusterError):
    """initdb/pg_ctl/postgres are not installed where we look for them."""


@dataclass(frozen=True)
class PgBinaries:
    initdb: Path
    pg_ctl: Path
    postgres: Path


def _version_key(bin_dir: str) -> tuple[int, ...]:
    # /usr/lib/postgresql/<ver>/bin: sort "9.6" < "15" < "16" numerically, not as strings.
    version = Path(bin_dir).parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (-1,)


def find_pg_binaries(
    path: str | None = None, search_glob: str = _DEFAULT_SEARCH_GLOB
) -> PgBinaries:
    """Locate initdb, pg_ctl and postgres.

    ``path`` defaults to ``$PATH``; when any binary is missing there, fall back to the newest
    ``search_glob`` directory (Debian/Ubuntu keep the server binaries off PATH, in
    ``/usr/lib/postgresql/<ver>/bin``) that has all three. All three come from one place so
    a PATH ``initdb`` is never mixed with another version's ``postgres``.
    """
    on_path = [shutil.which(name, path=path) for name in _REQUIRED_BINARIES]
    if all(on_path):
        initdb, pg_ctl, postgres = (Path(found) for found in on_path if found)
        return PgBinaries(initdb=initdb, pg_ctl=pg_ctl, postgres=postgres)

    for bin_dir in sorted(glob.glob(search_glob), key=_version_key, reverse=True):
        candidates = [Path(bin_dir, name) for name in _REQUIRED_BINARIES]
        if all(c.is_file() and os.access(c, os.X_OK) for c in candidates):
            return PgBinaries(*candidates)

    raise PostgresBinariesNotFoundError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or in "
        f"{search_glob}. The integration tests need a real PostgreSQL 15+ server: install it "
        "with `apt-get install postgresql` (Debian/Ubuntu; the binaries then live in "
        "/usr/lib/postgresql/<ver>/bin), or make sure initdb, pg_ctl and postgres are on PATH "
        "or in /usr/lib/postgresql/<ver>/bin."
    )


def _free_loopback_port() -> int:
    # Racy by nature (another process may grab it before the postmaster binds), which is why
    # the first start() retries with a fresh port when the log says the address is in use.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresClusterError(
        "running as root, but neither a 'postgres' nor a 'nobody' user exists to run "
        "PostgreSQL as (it refuses to run as root); create one, e.g. `apt-get install "
        "postgresql` creates 'postgres'"
    )


def _drop_privileges_prefix(user: pwd.struct_passwd) -> list[str]:
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user.pw_name, "--"]
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [
            setpriv,
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--",
        ]
    raise PostgresClusterError(
        "running as root, but neither `runuser` nor `setpriv` (util-linux) is available to "
        "run PostgreSQL as an unprivileged user"
    )


def _process_state(pid: int) -> str | None:
    """The /proc state letter of ``pid`` ("R", "S", "Z", ...), or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may contain spaces; the state follows it.
    return stat.rsplit(")", 1)[1].split()[0]


def _until_stopped(pids: list[int], timeout: float = 10.0) -> None:
    """Wait until each of `pids` has taken its SIGSTOP (stopped, or gone: a zombie or none)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while _process_state(pid) not in ("T", "t", "Z", "X", None):
            if time.monotonic() > deadline:
                raise PostgresClusterError(f"frozen(): process {pid} did not stop")
            time.sleep(0.001)


def _is_alive(pid: int) -> bool:
    if Path("/proc").is_dir():
        # A zombie has exited already; it only waits for a parent that may never reap it
        # (the postmaster's parent is whatever adopted it after pg_ctl exited).
        state = _process_state(pid)
        return state is not None and state not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _run_in_fresh_loop(coro: Coroutine[Any, Any, _T], timeout: float) -> _T:
    """Run ``coro`` to completion on a private event loop in a helper thread.

    The cluster API is synchronous so that session fixtures and plain code can use it, but it
    may be called from inside a running loop (an async test); asyncio.run() would refuse
    there, so the coroutine gets its own thread and loop.
    """
    result: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(asyncio.wait_for(coro, timeout)))
        except BaseException as exc:  # re-raised in the caller's thread below
            error.append(exc)

    thread = threading.Thread(target=target, name="pg-cluster-admin", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if thread.is_alive():
        raise PostgresClusterError(f"database administration did not finish in {timeout}s")
    if error:
        raise error[0]
    return result[0]


def _database_name() -> str:
    return f"test_{uuid.uuid4().hex[:16]}"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresCluster:
    """A private PostgreSQL cluster in a temp directory, listening on 127.0.0.1 only.

    Typical use::

        with PostgresCluster() as cluster:
            dsn = cluster.create_database("app")
            ...

    ``start()`` initialises the data directory on first use; ``stop()``/``restart()``/
    ``kill()`` keep it, so data survives restarts and crashes like a real server's would.
    ``remove()`` stops the server and deletes everything.
    """

    superuser = "test"

    def __init__(
        self,
        *,
        binaries: PgBinaries | None = None,
        base_dir: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.binaries = binaries or find_pg_binaries()
        self.timeout = timeout
        self.password = secrets.token_hex(16)  # hex: nothing to escape in a DSN
        self._base_dir = base_dir
        self._root: Path | None = None
        self._port: int | None = None
        self._initialised = False
        self._run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self._prefix = _drop_privileges_prefix(self._run_as) if self._run_as else []
        # The next test's database, made while this one runs (take_database).
        self._spare: concurrent.futures.Future[str | None] | None = None
        self._spare_maker: concurrent.futures.ThreadPoolExecutor | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- paths and connection details ---------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._root is None:
            raise PostgresClusterError("cluster has no directory yet; call start() first")
        return self._root

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresClusterError("cluster has no port yet; call start() first")
        return self._port

    def dsn(self, dbname: str = "postgres") -> str:
        return (
            f"postgresql://{self.superuser}:{self.password}@{self.host}:{self.port}/"
            f"{quote(dbname, safe='')}"
        )

    def role_dsn(self, role: str, database: str, password: str = "pw") -> str:  # noqa: S107
        """The DSN of `database` as `role` (made by the test, with `password`)."""
        return (
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}@{self.host}:"
            f"{self.port}/{quote(database, safe='')}"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Initialise (first time only) and start the server; returns once it accepts
        connections. A no-op when already running."""
        if self.is_running():
            return
        if not self._initialised:
            self._initdb()
        if self._port is not None:
            # restart()/start-after-kill(): same port, so DSNs handed out earlier stay valid.
            self._pg_ctl_start()
            return
        for attempt in range(3):
            self._port = _free_loopback_port()
            try:
                self._pg_ctl_start()
                return
            except PostgresClusterError as exc:
                if attempt == 2 or "already in use" not in str(exc):
                    self._port = None
                    raise

    def stop(self, mode: ShutdownMode = "fast") -> None:
        """Shut the server down (``fast`` disconnects clients, like a service restart). A
        no-op when not running."""
        if not self.is_running():
            return
        self._run(
            [
                str(self.binaries.pg_ctl),
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(self._pg_ctl_timeout),
                "stop",
            ],
            what=f"pg_ctl stop -m {mode}",
        )

    def restart(self, mode: ShutdownMode = "fast") -> None:
        """Stop then start on the same port and data dir: existing connections are dropped,
        new ones work. Simulates a database restart in the middle of a test."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster, as an OOM kill or host crash would. ``start()`` afterwards
        runs crash recovery on the same data directory.

        Every commit answered survives it (``synchronous_commit`` is on; with ``fsync`` off
        only a crash of the machine would lose them).
        """
        pid = self._postmaster_pid()
        if pid is None or not _is_alive(pid):
            raise PostgresClusterError("kill(): the server is not running")
        children = _children_of(pid)
        os.kill(pid, signal.SIGKILL)
        self._wait_gone([pid], "postmaster")
        # The backends notice their postmaster is gone and exit by themselves, but a new
        # postmaster refuses to start while any of them still holds the old shared memory,
        # so wait for them (and only as a last resort kill them, e.g. one stuck in a query).
        try:
            self._wait_gone(children, "postmaster children", timeout=min(self.timeout, 10.0))
        except PostgresClusterError:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self._wait_gone(children, "postmaster children")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The postmaster and its children SIGSTOPped for the block, as a frozen host or a
        network cut leaves PostgreSQL: connections stay open and nothing answers.

        The postmaster is stopped first (it forks no child after the listing) and continued
        last. A child may have exited already (a zombie its postmaster reaps once continued):
        it is skipped, and every other one is still continued, else the cluster would stay
        frozen for every test after this one."""
        pid = self._postmaster_pid()
        if pid is None or not _is_alive(pid):
            raise PostgresClusterError("frozen(): the server is not running")
        os.kill(pid, signal.SIGSTOP)
        stopped = [pid]
        try:
            # A signal is taken when its process next runs: a postmaster on the other core
            # could fork a child after the listing, and a child read as running (R) had not
            # stopped yet (a loaded CI machine: {'R', 'T'} just after the freeze).
            _until_stopped([pid])
            for child in _children_of(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
                    stopped.append(child)
            _until_stopped(stopped)
            yield
        finally:
            for each in reversed(stopped):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(each, signal.SIGCONT)

    def is_running(self) -> bool:
        pid = self._postmaster_pid()
        return pid is not None and _is_alive(pid)

    def remove(self) -> None:
        """Stop the server if it runs and delete the temp directory. Safe to call twice."""
        atexit.unregister(self.remove)
        self._drop_spare()
        if self._root is None:
            return
        try:
            if self.is_running():
                try:
                    self.stop("fast")
                except PostgresClusterError:
                    self.kill()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
            self._initialised = False
            self._port = None
            self._release_watchdog()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    # -- databases ----------------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by the superuser) and return its DSN."""
        self._admin(f"CREATE DATABASE {_quote_ident(name)}")
        return self.dsn(name)

    def take_database(self) -> str:
        """A fresh, empty database's DSN: the one made ahead while the test before ran when
        there is one, else one made now; then the next one is begun. CREATE DATABASE copies
        template1's ~8 MB, 0.15-0.5 s on a 2-core VM: a test waited for it in its setup."""
        spare, self._spare = self._spare, None
        name = spare.result() if spare is not None else None
        if name is None:
            name = _database_name()
            self.create_database(name)
        if self._spare_maker is None:
            self._spare_maker = concurrent.futures.ThreadPoolExecutor(1, "pg-spare-database")
        self._spare = self._spare_maker.submit(self._make_spare)
        return self.dsn(name)

    def _make_spare(self) -> str | None:
        """A database for the next test; None when the cluster could not make it (a test
        stopped, killed or froze it meanwhile: the next test makes its own)."""
        name = _database_name()
        try:
            self.create_database(name)
        except Exception:  # noqa: BLE001 - any failure: made in the test's setup instead
            return None
        return name

    def _drop_spare(self) -> None:
        """The spare forgotten (its cluster is going), its maker stopped."""
        if self._spare_maker is not None:
            self._spare_maker.shutdown(wait=True, cancel_futures=True)
        self._spare = self._spare_maker = None

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still connected to it."""
        self._admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def _admin(self, statement: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.dsn("postgres"), timeout=self.timeout)
            try:
                await conn.execute(statement)
            finally:
                await conn.close(timeout=self.timeout)

        _run_in_fresh_loop(run(), self.timeout)

    # -- internals ----------------------------------------------------------------------------

    @property
    def _pg_ctl_timeout(self) -> int:
        return max(1, math.ceil(self.timeout))  # pg_ctl -t takes whole seconds

    def _initdb(self) -> None:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="pg-cluster-", dir=self._base_dir))
            # Safety net for a process that exits without remove(): no orphaned postmaster.
            atexit.register(self.remove)
            # And for one killed (atexit does not run then): see _WATCHDOG.
            self._start_watchdog()
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._run_as is not None:
            # The unprivileged user must own everything it writes to: initdb creates data/
            # inside root, postgres creates its socket and lock file in sock/, pg_ctl appends
            # to the log in root. mkdtemp's 0700 root-owned dir is otherwise unreachable.
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)
        try:
            self._run(
                [
                    str(self.binaries.initdb),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",  # disposable data: skip the final fsync of every file
                ],
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        self._initialised = True

    def _start_watchdog(self) -> None:
        command = [sys.executable, "-c", _WATCHDOG, str(self.root), str(self.binaries.pg_ctl)]
        self._watchdog = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [*command, *self._prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _release_watchdog(self) -> None:
        """Tell the watchdog the cluster is gone (the end of its stdin), and reap it."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait(timeout=5)

    def _pg_ctl_start(self) -> None:
        self._remove_stale_lock_files()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )
        self._run(
            [
                str(self.binaries.pg_ctl),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.binaries.postgres),
                "-o",
                options,
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(self._pg_ctl_timeout),
                "start",
            ],
            what="pg_ctl start",
            include_log=True,
        )

    def _postmaster_pid(self) -> int | None:
        if self._root is None:
            return None
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first_line)
        except (FileNotFoundError, ValueError):
            return None

    def _remove_stale_lock_files(self) -> None:
        # After kill() the data-dir lock (postmaster.pid) and the socket lock
        # (sock/.s.PGSQL.<port>.lock) stay behind. postgres clears them itself when the PID in
        # them is gone, but it checks with kill(pid, 0), which succeeds for a zombie, and the
        # killed postmaster stays a zombie until whatever adopted it reaps it (in some
        # containers PID 1 does that late or never). We know it has exited, so clear them.
        for lock in (self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")):
            try:
                pid = int(lock.read_text().split("\n", 1)[0])
            except (FileNotFoundError, ValueError):
                continue
            if not _is_alive(pid):
                lock.unlink(missing_ok=True)

    def _wait_gone(self, pids: Sequence[int], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while any(_is_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise PostgresClusterError(f"{what} still running after SIGKILL: {list(pids)}")
            time.sleep(0.02)

    def _run(self, argv: list[str], *, what: str, include_log: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"  # stable, English messages in logs and errors
        try:
            proc = subprocess.run(
                [*self._prefix, *argv],
                cwd=self.root,  # readable by the unprivileged user, unlike e.g. /root
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout + 10,  # pg_ctl's own -t should fire first
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresClusterError(
                f"{what} timed out after {exc.timeout}s{self._log_tail(include_log)}"
            ) from exc
        if proc.returncode != 0:
            raise PostgresClusterError(
                f"{what} failed with exit code {proc.returncode}\n"
                f"command: {' '.join([*self._prefix, *argv])}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
                f"{self._log_tail(include_log)}"
            )

    def _log_tail(self, include: bool) -> str:
        if not include:
            return ""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"\n(no server log at {self.log_file})"
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"\nlast {_LOG_TAIL_LINES} lines of {self.log_file}:\n{tail}"


# -- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One cluster for the whole test session, removed at the end. Missing binaries are an
    error, not a skip: a silently skipped database suite looks exactly like a passing one."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database per test; dropped afterwards so a long suite does not fill the
    disk with ~8 MB per test."""
    postgres_cluster.start()  # no-op unless an earlier test left it stopped or killed
    dsn = postgres_cluster.take_database()
    yield dsn
    if postgres_cluster.is_running():  # this test may have left it stopped or killed
        postgres_cluster.drop_database(urlsplit(dsn).path.lstrip("/"))
