"""The SQLite backend (the embedded default): one connection on one dedicated thread.

The event loop never waits on SQLite: a whole transaction program (common/storage/programs.py)
runs on the database thread in one hop, and the thread runs every queued program each time it
wakes, handing the batch's results back to the loop at once (a thread hop costs ~0.03-0.1 ms
of CPU on a small VM, more than most of our statements; see bench/RESULTS.md). Writes are
`BEGIN IMMEDIATE ... COMMIT` (rolled back on any error); reads run in autocommit.

The schema comes from the numbered files in migrations/sqlite/, applied at open, in order, in
one `BEGIN IMMEDIATE` transaction (SQLite's writer lock: a second process opening the same
file at the same moment waits, then finds them applied), tracked in `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import pwd
import resource
import sqlite3
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from common.calls.models import Erasure
from common.config_store.store import NOT_A_FILE, make_directories
from common.locks import LOCKED_TRY_S, lock_holder
from common.repeats import Outage, say_held_back_at_stop
from common.settings import SQLITE_SIDE_FILES
from common.storage.base import (
    BeforeErasing,
    DatabaseAccessDenied,
    DatabaseError,
    DatabaseGone,
    DatabaseLocked,
    DatabaseNewer,
    DatabaseStalled,
    ErasureUnfinished,
)
from common.storage.migrations import BACKED_OUT, Migration, describe, migrations_for, renumbered
from common.storage.orphan_wal import keep_orphaned_wal
from common.storage.programs import SQLITE, Program, Row, probe_write
from common.storage.sql import SqlCallStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
MIGRATIONS = migrations_for("sqlite")
SCHEMA_VERSION = MIGRATIONS[-1].version


# Below this much free space on the database's device, /readyz says not ready (a call's
# transaction writes a few pages to the WAL, and a checkpoint may grow the file).
MIN_FREE_BYTES = 256 * 1024
# calls.db-wal past this much is said (once, naming who holds it): a reader's snapshot keeps
# it from being emptied into calls.db, and each call adds ~420 KB. SQLite empties it at
# ~4 MB otherwise; once emptied again, the file is cut back to WAL_KEEP_BYTES (it kept its
# largest size for good).
WAL_WARN_BYTES = 64 * 1024 * 1024
WAL_KEEP_BYTES = 8 * 1024 * 1024
# After a write failed on the disk, each write empties the log into calls.db first, until its
# device has this much free again: 4 times what SQLite lets the log grow to before it empties
# it (4 MB). Space freed on a full disk went to the log, which filled it again before that
# (a 2 MB tmpfs made 4 MB: full again in 35 s, calls.db still 4 KiB), and a log on a full
# disk cannot be emptied into a calls.db that has no room to grow.
ROOM_AGAIN_BYTES = 16 * 1024 * 1024
# And so below it, looked at this often: a disk filled by other files (logs) held the writes
# since the last checkpoint in the log only, which no checkpoint could then empty into a
# calls.db with no room to grow: the little room freed after took no call.
SPACE_LOOK_EVERY_S = 1.0
# A write that failed on the disk with calls.db or its -wal this close to the process's file
# size limit (RLIMIT_FSIZE) failed at that limit: a write stops exactly at it, and SQLite
# writes a page (4 KiB) or a log frame (4 KiB + 24 bytes) at a time.
SIZE_LIMIT_MARGIN_BYTES = 64 * 1024
SQLITE_PAGE_BYTES = 4096  # the page size calls.db is made with (SQLite's default)
# SQLite's temporary files (a savepoint's journal past 64 KiB: writes queued together run in
# one transaction, each after the first in a savepoint; a sort too large for the cache) kept
# in memory. As files they are opened as needed in $TMPDIR, /var/tmp or /tmp, not beside
# calls.db: once every file descriptor was in use (seen under `ulimit -n 256`), such writes
# failed "unable to open database file" while calls.db was open, and a full temporary
# directory failed them "database or disk is full" while calls.db's own disk had room. The
# cost: a savepoint's journal is held in memory until its commit (measured: +24 MB while
# 100,000 rows went into a 1,000,000-row table with an index on random phone numbers, as a
# large campaign's upload does; given back at the commit).
TEMP_STORE = "MEMORY"
READ_MARKS = {"123", "124", "125", "126", "127"}  # WAL_READ_LOCK(0..4) in the -shm file
PROBE_ROW = "(probe)"  # the readiness row a probe writes as large as a call, then deletes
WAL_SWITCH_TIMEOUT_S = 5.0  # as long as the busy timeout every other statement waits
# Once a write waited the whole busy timeout for another process's lock, each write after it
# tries the lock this long only (and says the database is locked), until one gets it: every
# request queued on the database's one thread waited 5 s more than the one before (6 calls:
# 503 after 5 to 25 s).
LOCKED_BUSY_TIMEOUT_MS = round(LOCKED_TRY_S * 1000)
# How long a request waits for its turn on the database's thread before it is answered 503
# without being run: a write that never returns (a stalled disk) held every request queued
# behind it, with no answer at all. Past the busy timeout, as a write waiting for the lock
# holds the queue that long.
QUEUE_WAIT_S = 10.0
# How long a thread with nothing left to do is given to close its connection at a stop.
IDLE_CLOSE_WAIT_S = 1.0


# Calls recorded by the releases of 2026-11-26 (schema 1 and 2, before the migration files)
# have no dial mark: 0003 added dial_started_at empty, and such a call's dial was written as a
# 'dialed' line of its timeline. Left live by that server and read as never dialled, the
# upgrade settled each 'failed, nobody was called' and freed its Idempotency-Key: a client's
# retry under the key called the person again. Each live one is marked at its 'dialed' line
# or, with none (its server stopped during the dial, which may have rung), as it was recorded.
# Run as such a database is migrated (no version of its own: the code before it reads the
# database as it did); those releases wrote no config snapshot, every call since has one.
MARK_FIRST_RELEASE_DIALS = (
    "UPDATE calls SET dial_started_at = COALESCE((SELECT MIN(e.at) FROM events e"
    " WHERE e.call_id = calls.call_id AND e.kind = 'dialed'), created_at)"
    " WHERE dial_started_at IS NULL AND config IS NULL"
    " AND status IN ('dialing', 'ringing', 'in_progress')"
)


def _apply_renumbered(conn: sqlite3.Connection, version: int) -> tuple[Migration, ...]:
    """The migrations of RENUMBERED a database at `version` was never given, applied now:
    those that made something (one found already made each start costs nothing but a look)."""
    skipped = tuple(m for m in renumbered("sqlite") if m.version <= version)
    table, column = BACKED_OUT
    if not skipped or not any(
        row[1] == column for row in conn.execute(f"PRAGMA table_info({table})")
    ):
        return ()
    made = []
    for migration in skipped:
        before = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        for statement in migration.statements:
            conn.execute(statement)
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] != before:
            made.append(migration)
    return tuple(made)


def _enter_wal(conn: sqlite3.Connection, timeout_s: float = WAL_SWITCH_TIMEOUT_S) -> None:
    """`PRAGMA journal_mode=WAL`, retried while the file is locked. On a new file several
    processes opening it at once each hold a read lock and want the exclusive lock the switch
    needs; SQLite answers "database is locked" at once to avoid the deadlock, without waiting
    on the busy handler (3-4% of four stores opening a new file together failed that way)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _create_owner_only(path: Path) -> None:
    """Create a missing database file readable by its owner alone: it holds numbers,
    transcripts and summaries, and SQLite gives its -wal and -shm files the database's
    permissions (it would create it 0644 under the usual umask). An existing file keeps its
    own; `:memory:` is no file."""
    if str(path) == ":memory:":
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))


def _is_not_a_file(path: Path) -> bool:
    """`path` is there, and is no regular file: SQLite says only "unable to open database
    file" of a directory and "disk I/O error" of /dev/null."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:  # not there (yet): SQLite creates it, or says why not
        return False


def access_problem(path: Path, *, writing: bool = True) -> str | None:
    """What keeps this process from using the database at `path`, by the file system's
    permissions, and what to do; None when they allow it (the failure is another). Not
    `writing` (a tool that only reads, `agent describe`), only a file it may not read is
    said, without advice to give the server's files to it. SQLite
    reads and writes `path`, its -wal and its -shm, and makes those two in its directory, and
    says none of it: "unable to open database file" of another user's calls.db (one a server
    run as root left), "attempt to write a readonly database" of a calls.db this user may
    write in a directory it may not, and the server sent the operator to another
    CALLS_DB_PATH, a new, empty database (no calls, do-not-call list or Idempotency-Keys)."""
    if str(path) == ":memory:":
        return None
    directory = path.parent
    user = _user_name(os.geteuid())
    if not writing:
        return _unreadable(path, user)
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return None  # no directory (yet): making it says why it cannot be
    if read_only:
        return f"{path.name} is on a read-only file system: mount it writable"
    existing = False
    for file in (path, *(path.with_name(path.name + s) for s in SQLITE_SIDE_FILES)):
        try:
            found = os.stat(file)
        except OSError:
            continue
        existing = True
        if _may(file, os.R_OK | os.W_OK):
            continue
        mode = stat.S_IMODE(found.st_mode)
        if found.st_uid == os.geteuid():  # its owner's mode leaves out reading or writing
            return (
                f"{file.name} is this user's ({user}), but its mode ({mode:04o}) does not let"
                f" it read and write it: chmod u+rw {file.name}"
            )
        return (
            f"{file.name} may not be written by this user ({user}): it is"
            f" {_user_name(found.st_uid)}'s, mode {mode:04o}. Give"
            f" {path.name} and its {path.name}-* files to {user} (chown), or run the server"
            " as their owner: another CALLS_DB_PATH would be a new, empty database, without"
            " these calls, do-not-call list and Idempotency-Keys"
        )
    if not _may(directory, os.W_OK | os.X_OK):
        wanted = (
            f"let {user} write that directory, or run the server as its owner: another"
            " CALLS_DB_PATH would be a new, empty database"
            if existing
            else f"let {user} write that directory, or set CALLS_DB_PATH to a file in one"
        )
        return (
            f"this user ({user}) may not create files in {path.name}'s directory, where SQLite"
            f" makes {path.name}-wal and {path.name}-shm beside it: {wanted}"
        )
    return None


def _unreadable(path: Path, user: str) -> str | None:
    """`path` there, and not readable by this process's user: whose it is, and its mode."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    if _may(path, os.R_OK):
        return None
    return (
        f"{path.name} may not be read by this user ({user}): it is"
        f" {_user_name(found.st_uid)}'s, mode {stat.S_IMODE(found.st_mode):04o}"
    )


def rows_held(path: Path) -> tuple[int, int] | None:
    """How many calls and do-not-call numbers the SQLite database at `path` holds, or None
    when it cannot be told (no file, not a database, another schema). Read as immutable:
    no lock is taken and no -wal or -shm made beside it (a server that does not use it
    must leave no files of its user there); a log not emptied into it is not counted."""
    if not path.is_file():
        return None
    uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=0)
    except sqlite3.Error:
        return None
    try:
        calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        listed = conn.execute("SELECT count(*) FROM dnc").fetchone()[0]
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    return int(calls), int(listed)


def _not_a_directory(directory: Path) -> Path:
    """The part of `directory` (or it itself) that is there and is no directory: what keeps
    it from being made."""
    for part in (*reversed(directory.parents), directory):
        if part.exists() and not part.is_dir():
            return part
    return directory


def _may(path: Path, mode: int) -> bool:
    """`os.access` as this process's effective user (its ACLs and capabilities counted)."""
    return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _is_busy(exc: BaseException) -> bool:
    """SQLite's SQLITE_BUSY (any of its extended codes): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY


def _is_disk_error(exc: BaseException) -> bool:
    """SQLITE_IOERR or SQLITE_FULL: the file could not be written (its disk, a limit)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL)


def _at_size_limit(path: Path) -> str | None:
    """Why a write failed on the disk, when calls.db or its -wal is at this process's file
    size limit (`ulimit -f`, systemd's LimitFSIZE=, a container's --ulimit fsize): SQLite says
    only "disk I/O error" (or "database or disk is full"), which sent the operator to a disk
    that was fine (found running the server under `ulimit -f`: once calls.db
    reached the limit, every call got 503 and /readyz said `database: disk I/O error`)."""
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit == resource.RLIM_INFINITY:
        return None
    found = [(_stat(name), name) for name in (str(path), f"{path}-wal")]
    sizes = [(stat_.st_size, name) for stat_, name in found if stat_ is not None]
    near = [(size, name) for size, name in sizes if size + SIZE_LIMIT_MARGIN_BYTES > limit]
    if not near:
        return None
    # The one the write stopped at, when both are near it; but a calls.db with no room for one
    # more page is named even beside a log at the limit: that log can no longer be emptied into
    # it (found under `ulimit -f 1250`: both files at 1280000 bytes, and the hint named the log
    # and promised that writes would go on, while every write was refused until a restart).
    db_full = sizes[0][1] == str(path) and sizes[0][0] + SQLITE_PAGE_BYTES > limit
    _, name = sizes[0] if db_full else max(near)
    then = (
        "it is emptied into calls.db and writes go on until it grows back to it"
        if name.endswith("-wal")
        else "no write that grows it succeeds until the limit is raised and the server restarted"
    )
    return (
        f"{Path(name).name} reached this process's file size limit ({limit} bytes: `ulimit"
        f" -f`, systemd's LimitFSIZE=, a container's --ulimit fsize): {then}; raise or lift"
        " the limit where the server is started"
    )


def _lock_holder(path: Path, reading: bool = False) -> str:
    """Who holds a write lock on the database (or its -shm file, WAL's write lock), or with
    `reading` a read snapshot of its log (a read mark of the -shm file, bytes 123-127), from
    /proc/locks: "pid 4242 (sqlite3)", or "" where that cannot be told (not Linux, a lock of
    this process's own). Only the process's name: its command line may hold secrets."""
    shm = Path(f"{path}-shm")
    if reading:
        holder = lock_holder([shm], "READ", READ_MARKS)
    else:
        holder = lock_holder([path, shm])
    return "" if holder is None else str(holder)


def _file_identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return (stat.st_dev, stat.st_ino)


def _db_stat(path: Path) -> tuple[os.stat_result | None, bool]:
    """The stat of the file at `path` (followed, if `path` is a symbolic link) and whether it
    is one: one lstat for a file. calls.db moved away and a link to it put in its place
    stats as the same file, but a restart opens the link's target and reads none of the
    log, still named calls.db-wal (measured: 'no such table')."""
    try:
        found = os.lstat(path)
    except OSError:
        return None, False
    if stat.S_ISLNK(found.st_mode):
        return _stat(path), True
    return found, False


def _stat(path: Path | str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _content_mark(stat: os.stat_result | None) -> tuple[int, int] | None:
    """When, and to what size, the file of `stat` was last written (None: not there)."""
    return None if stat is None else (stat.st_size, stat.st_mtime_ns)


def _db_header(db: int) -> bytes | None:
    """calls.db's header (its first 100 bytes, of `db` open on it: the change counter SQLite
    moves whenever page 1 is written, the page count, the freelist, the schema cookie), or
    None if unreadable."""
    try:
        return os.pread(db, 100, 0)
    except OSError:
        return None


def _checkpoint_mark(shm: int) -> bytes | None:
    """What changes in the log's index (calls.db-shm, open as `shm`) whenever any connection
    copies the log into calls.db or starts the log anew: its salts (bytes 32-39 of the
    index's header), and nBackfill and nBackfillAttempted (bytes 96-99 and 128-131). None if
    it cannot be read."""
    try:
        head = os.pread(shm, 136, 0)
    except OSError:
        return None
    return head[32:40] + head[96:100] + head[128:132] if len(head) == 136 else None


def _checkpointing(mark: bytes | None) -> bool:
    """A checkpoint is copying the log into calls.db (or one stopped part way): the index's
    nBackfillAttempted, set as one begins, is past its nBackfill, set as it ends."""
    return mark is not None and mark[8:12] != mark[12:16]


@dataclass(frozen=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    together: bool = False  # may share one transaction with the calls queued next to it
    deadline: float = math.inf  # loop time: not begun (or not handed back) by then, overdue
    wait_s: float = math.inf  # once begun, overdue if not returned this long after it began


Outcome = tuple[_Call, Any, BaseException | None]


class _Worker:
    """One thread that runs submitted calls in order, all that are queued per wake-up.

    Each batch's results go back to their event loop in one `call_soon_threadsafe`, instead of
    one wake-up of the loop per call (handing each result back on its own measured 2.4x the CPU
    per call under load). Calls submitted `together` that are queued next to each other are
    handed to `run_together` at once (the store runs them in one transaction). After
    `shutdown` nothing more is accepted; what was queued still runs.
    """

    def __init__(
        self, name: str, run_together: Callable[[list[_Call]], list[Outcome]] | None = None
    ) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._queue: deque[_Call] = deque()
        self._taken: deque[_Call] = deque()  # of the batch being run, those not begun yet
        self._finished: list[Outcome] = []  # of the batch being run, those done
        self._running: list[_Call] = []  # of the batch being run, those begun, not done
        self._begun_at = math.inf  # loop time (time.monotonic) the running ones began
        self._stopping = False
        self.abandoned = False  # its thread did not answer as the store closed: not joined
        self.stalled_since: float | None = None  # loop time: a call waited QUEUE_WAIT_S
        # The one timer that looks for overdue calls (SqliteCallStore._watch), armed while a
        # call with a deadline may be pending: a timer of its own per call cost ~7 µs each.
        self.watchdog: asyncio.TimerHandle | None = None
        self._run_together = run_together
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        together: bool = False,
        deadline: float = math.inf,
        wait_s: float = math.inf,
    ) -> asyncio.Future[T]:
        """Queue fn(*args); raises RuntimeError once shut down."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._stopping:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append(_Call(loop, future, fn, args, together, deadline, wait_s))
            self._ready.notify()
        return future

    def overdue(self, now: float) -> tuple[list[_Call], list[_Call], list[Outcome], float]:
        """The calls whose deadline is past: those not begun (in the queue, or in the batch
        being run), taken out so that they never run; those begun `wait_s` ago or more that
        have not returned (left to finish: their outcome, once it comes, goes to nobody; one
        begun just before its deadline is given its whole wait to end, not answered while it
        would commit a moment later); and those done whose batch still runs, their outcomes
        taken out to be handed back now. Then the earliest deadline of the calls left (inf:
        none has one)."""
        with self._ready:
            late = [c for w in (self._queue, self._taken) for c in w if c.deadline <= now]
            if late:
                self._queue = deque(c for c in self._queue if c.deadline > now)
                self._taken = deque(c for c in self._taken if c.deadline > now)
            stuck = [c for c in self._running if self._begun_at + c.wait_s <= now]
            done = [o for o in self._finished if o[0].deadline <= now]
            self._finished = [o for o in self._finished if o[0].deadline > now]
            left = [c.deadline for w in (self._queue, self._taken) for c in w]
            left += [self._begun_at + c.wait_s for c in self._running]
            left += [o[0].deadline for o in self._finished]
            soonest = min((d for d in left if d > now), default=math.inf)
        return late, stuck, done, soonest

    @property
    def stopping(self) -> bool:
        return self._stopping

    def unfinished(self) -> int:
        """How many calls are queued or running (not handed back yet)."""
        with self._ready:
            return len(self._queue) + len(self._taken) + len(self._running)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing more accepted; with `wait`, the thread joined once it ran what is queued
        (without, it ends by itself then: a thread a stalled disk holds is left to it)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()
        if wait and self.watchdog is not None:  # nothing left for it to look at
            self.watchdog.cancel()
            self.watchdog = None

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:
                    return
                self._taken, self._queue = self._queue, self._taken
            self._run_taken()
            with self._ready:
                finished, self._finished = self._finished, []
            done: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
            for outcome in finished:
                done.setdefault(outcome[0].loop, []).append(outcome)
            for loop, outcomes in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, outcomes)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass

    def _run_taken(self) -> None:
        """Every call of the batch taken, in order, into `_finished`; each run of neighbours
        submitted `together` at once. Each is taken out of `_taken` as it begins: until then
        it can be withdrawn (its request answered), and once done its outcome taken (both
        while a call of the batch never returns: a stalled disk)."""
        while True:
            with self._ready:
                if not self._taken:
                    return
                run = [self._taken.popleft()]
                if run[0].together and self._run_together is not None:
                    while self._taken and self._taken[0].together:
                        run.append(self._taken.popleft())
                self._running, self._begun_at = run, time.monotonic()
            if len(run) > 1 and self._run_together is not None:
                outcomes = self._run_together(run)
            else:
                outcomes = [_run_one(run[0])]
            with self._ready:
                self._running = []
                self._finished += outcomes


def _run_one(call: _Call) -> Outcome:
    try:
        return (call, call.fn(*call.args), None)
    except BaseException as exc:  # handed to the caller, like an executor does
        return (call, None, exc)


def _deliver(outcomes: list[Outcome]) -> None:
    for call, result, exc in outcomes:
        if call.future.done():  # cancelled, or answered at its deadline while it ran
            continue
        if exc is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(exc)


class SqliteCallStore(SqlCallStore):
    """CallStore on one SQLite file (WAL), owned by one worker thread."""

    dialect = SQLITE

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, instance: str = ""
    ) -> None:
        super().__init__(clock, instance)
        self.path = path
        self._worker = _Worker("calls-db", run_together=self._run_writes_together)
        self._conn: sqlite3.Connection | None = None
        # Counts and list pages run on a connection and thread of their own (see _read_aside).
        self._reader: _Worker | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._closing = False
        # Set as the server stops (stop_by): no wait of its steps goes past it.
        self._stop_deadline = math.inf
        self._stop_began = math.inf
        # (device, inode) of the file opened, and whether `path` is a symbolic link to it
        self._identity: tuple[int, int, bool] | None = None
        self._wal_identity: tuple[int, int] | None = None  # and of its -wal, as opened
        self._shm_identity: tuple[int, int] | None = None  # and of its -shm, as opened
        # calls.db's size and time of change, and the log's checkpoint mark, after our last
        # write: calls.db written since with no checkpoint was written over (`_still_ours`).
        # With them its header, read again only when its size or time of change moved.
        self._marks: tuple[tuple[int, int] | None, bytes | None] = (None, None)
        self._header: bytes | None = None
        # calls.db-shm, held open for those marks: opening it at each write cost ~20 µs, 7% of
        # the server's CPU per call at 1 client (bench.compare). Replaced, writes are refused.
        self._shm_fd: int | None = None
        # calls.db, held open for its header: closing a descriptor of it would let go of
        # every lock SQLite holds on it (POSIX locks are the process's, per file).
        self._db_fd: int | None = None
        self._wal_big_said = False  # its -wal passed WAL_WARN_BYTES (said), not cut back yet
        self._gone_said = False
        self._may_migrate = True
        # An erasure's checkpoint was held up by a reader; or, at start, may never have run:
        # a server killed between an erasure's commit and its checkpoint left the erased text
        # in the log and in calls.db's old pages, and its restart did not know. A log left
        # behind (a clean close empties and removes it) is emptied by the first retention
        # pass, the reaper's as the server starts.
        left = _stat(f"{path}-wal")
        self._wal_holds_erased = left is not None and left.st_size > 0
        self._locked_since: float | None = None  # monotonic: a write found the lock held
        # A write (not a probe's) failed on the disk, and no probe as large as a call's has
        # gone through since.
        self._disk_failure = False
        # A write failed on the disk and its device has not had ROOM_AGAIN_BYTES free since:
        # each write empties the log first (`_make_room`).
        self._short_of_space = False
        # The space free on calls.db's device as a write began, measured while short of it
        # (0 after a write failed on the disk): a write that changed nothing, or fit in the
        # pages calls.db had, is no sign of room (`_writes_taken`).
        self._free_bytes = 0
        self._space_looked_at = -math.inf  # (monotonic) while not short of space
        # Writes failing on the disk (said once a minute as 'calls database error'): said
        # once a write is taken again (`_writes_taken`).
        self._disk_outage = Outage()
        # What the last write failing on the disk found at the file size limit (the log, before
        # it was emptied), for its error to say (`_at_size_limit`).
        self._size_limit_hit: str | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(
        cls,
        path: Path,
        clock: Callable[[], float] = time.time,
        instance: str = "",
        *,
        migrate: bool = True,
    ) -> SqliteCallStore:
        """Open `path`, migrating it to this code's schema; with `migrate` False (a tool
        that only reads) a database at another schema version is a DatabaseError."""
        store = cls(path, clock, instance)
        store._may_migrate = migrate
        try:
            await store._submit(store._open_sync)
        except BaseException:
            store._worker.shutdown(wait=False)
            raise
        return store

    def _open_sync(self) -> None:
        """Open (creating the file and its directory) and migrate. A failure is one
        DatabaseError saying why, not logged here: whoever opens says it once, with the
        setting to change (an OSError escaped as `[Errno 2] ... ':memory:'`, naming nothing)."""
        try:
            self._connect_sync()
        except sqlite3.Error as exc:
            if _is_busy(exc):  # the file is fine: who holds it is what to look at
                holder = _lock_holder(self.path) or "another process"
                raise DatabaseLocked(f"it is locked by {holder}") from exc
            if (problem := self._access_problem()) is not None:
                raise DatabaseAccessDenied(problem) from exc
            raise DatabaseError(str(exc)) from exc
        except OSError as exc:
            if (problem := self._access_problem()) is not None:
                raise DatabaseAccessDenied(problem) from exc
            raise DatabaseError(exc.strerror or str(exc)) from exc

    def _access_problem(self) -> str | None:
        """access_problem of this store's file, as this store uses it (a reader only reads)."""
        return access_problem(self.path, writing=self._may_migrate)

    def _connect_sync(self) -> None:
        if _is_not_a_file(self.path):
            raise DatabaseError(NOT_A_FILE)
        if self.path.parent != Path():
            try:
                make_directories(self.path.parent)
            except (FileExistsError, NotADirectoryError) as exc:
                # "cannot create afile: File exists" read as a contradiction
                raise DatabaseError(
                    f"cannot create {self.path.parent}: {_not_a_directory(self.path.parent)}"
                    " is a file, not a directory"
                ) from exc
            except OSError as exc:
                raise DatabaseError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        if self._may_migrate and str(self.path) != ":memory:":
            keep_orphaned_wal(self.path)  # before SQLite drops it
        _create_owner_only(self.path)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(conn)
            _file_identity(self.path)  # OSError if no file is there (`:memory:`)
            self._identity = self._identity_now()
            self._wal_identity = self._wal_identity_now()
            self._shm_identity = self._side_identity_now("-shm")
            self._note_marks()
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _identity_now(self) -> tuple[int, int, bool] | None:
        """The identity of the file at `path` now; None if it is not there."""
        found, link = _db_stat(self.path)
        return None if found is None else (found.st_dev, found.st_ino, link)

    def _still_ours(self) -> None:
        """The file at `path` is still the one we opened. Deleted (or replaced) under a
        running server, SQLite goes on writing to the unlinked file: every call placed after
        that would be gone at the next start. One stat per write transaction (~1 µs)."""
        found_db, link = _db_stat(self.path)  # its identity and what was written to it
        identity = None if found_db is None else (found_db.st_dev, found_db.st_ino, link)
        if identity != self._identity:
            self._refuse_writes("removed" if identity is None else "replaced")
        # The index first: with it gone, another process may have written, checkpointed and
        # removed the log since, and a checkpoint through our index would undo its writes.
        shm = self._side_identity_now("-shm")
        if shm != self._shm_identity:
            if self._shm_identity is None:  # none when opened: SQLite made it since
                self._shm_identity = shm
            else:
                self._wal_gone(shm is None, "-shm")
        found = _stat(f"{self.path}-wal")
        wal = None if found is None else (found.st_dev, found.st_ino)
        if wal != self._wal_identity:
            if self._wal_identity is None:  # none when opened: SQLite made it since
                self._wal_identity = wal
                return
            self._wal_gone(wal is None)
        self._written_over(_content_mark(found_db))
        if found is not None:  # after the look at calls.db: it may copy the log into it
            self._watch_wal_size(found.st_size)

    def _note_marks(self) -> None:
        """After our own write (its COMMIT may have copied the log into calls.db). calls.db
        changed while the log's index did not (no checkpoint: a copy onto it while the write
        ran) keeps the marks from before it, for the next write's look."""
        # The index first: a checkpoint another process ends between the two looks changes
        # the index after its last write to calls.db, so that write is seen with it. Looked
        # at the other way round, its last writes came after the look at calls.db and its
        # index's change before the one at the index: the next write read calls.db changed
        # and the index not, 'written over' (a second server starting during the first's
        # migration refused every write).
        checkpoint = self._shm_mark()
        content = _content_mark(_stat(self.path))
        before, checkpoint_before = self._marks
        if content != before:
            if before is not None and checkpoint is not None and checkpoint == checkpoint_before:
                return
            self._header = self._db_header()
        self._marks = (content, checkpoint)

    def _db_header(self) -> bytes | None:
        """_db_header of calls.db (opened the first time, closed after the connection)."""
        if self._db_fd is None:
            try:
                self._db_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        return _db_header(self._db_fd)

    def _shm_mark(self) -> bytes | None:
        """_checkpoint_mark of calls.db-shm (opened the first time it is there)."""
        if self._shm_fd is None:
            try:
                self._shm_fd = os.open(f"{self.path}-shm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        return _checkpoint_mark(self._shm_fd)

    def _written_over(self, now: tuple[int, int] | None) -> None:
        """calls.db (its content mark `now`) written since our last write by something other
        than a checkpoint (any connection's changes the log's index): `cp backup.db calls.db`
        over the live file, which keeps its inode. SQLite went on answering from its cache
        and the log, then copied the log's pages into the other file's: every answer 200, and
        at the next start 'database disk image is malformed', every call lost. Its time
        alone moved, its size and header as they were (`touch calls.db`, a backup tool
        setting its time), nothing was written: every write was refused for it."""
        content, checkpoint = self._marks
        if content is None or now == content:
            return
        current = self._shm_mark()
        if checkpoint is None or current != checkpoint or _checkpointing(current):
            # A checkpoint by another process: done since, or still copying the log into
            # calls.db (its index says how far it got only once it is done: a second server
            # starting during the first's migration wrote while the first copied its 64 MB,
            # read calls.db changed and the index not, and refused every write).
            # calls.db looked at again after the index (see _note_marks): `now` was before it.
            self._marks = (_content_mark(_stat(self.path)), current)
            self._header = self._db_header()
            return
        if now is not None and now[0] == content[0] and self._header is not None:
            if self._db_header() == self._header:  # touched: its contents not written
                self._marks = (now, current)
                return
        self._refuse_writes("written over", " (a copy onto it?)")

    def _refuse_writes(self, what: str, guess: str = "") -> NoReturn:
        """calls.db `what` under the running server: DatabaseGone, said once at CRITICAL."""
        self.restart_needed = True
        error = DatabaseGone(
            f"{self.path} was {what} under the running server{guess}: nothing more is written"
            " to it; restart the server"
        )
        if not self._gone_said:
            self._gone_said = True
            logger.critical("%s", error)
        raise error

    def _watch_wal_size(self, size: int) -> None:
        """Say once that the log is past WAL_WARN_BYTES, and who holds it; and once that it
        was cut back. It grew by every write, unsaid, while a reader held it (16 MB in 62
        calls), and filled the disk a weekend later."""
        if size > WAL_WARN_BYTES and not self._wal_big_said:
            held, failure = self._checkpoint()
            if not held:
                return  # all in calls.db: the next write cuts it back, nobody holds it
            self._wal_big_said = True
            holder = _lock_holder(self.path, reading=True)
            if not holder and failure is not None:
                self._say_not_emptied(size, failure)
                return
            logger.warning(
                "calls database %s-wal is %d MB and grows with every write: it is held by %s"
                " (a read transaction left open: a backup tool, a `sqlite3` shell inside"
                " BEGIN), which keeps it from being emptied into %s; it is cut back once the"
                " reader lets go",
                self.path,
                size // 2**20,
                holder or "a reader",
                self.path.name,
            )
        elif size <= WAL_KEEP_BYTES and self._wal_big_said:
            self._wal_big_said = False
            logger.info("calls database %s-wal is back to %d MB", self.path, size // 2**20)

    def _say_not_emptied(self, size: int, failure: sqlite3.Error) -> None:
        """The log past WAL_WARN_BYTES that a checkpoint failed to empty, nobody holding it:
        why, by its error. A full disk was said as calls.db taking no writes
        ('made immutable: lsattr'), and 'nothing is lost' while writes needing space failed."""
        code = getattr(failure, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL:
            logger.error(
                "calls database %s-wal is %d MB: it cannot be emptied into %s (%s): the disk is"
                " full: free space on it (df -h %s); writes that need space fail until then,"
                " and it is emptied once %s can grow again",
                self.path,
                size // 2**20,
                self.path.name,
                failure,
                self.path.parent,
                self.path.name,
            )
            return
        logger.error(
            "calls database %s-wal is %d MB and grows with every write: it cannot be"
            " emptied into %s (%s): that file takes no writes (made immutable:"
            " lsattr; a failing disk: dmesg). Nothing is lost meanwhile (the log"
            " holds every write), but it fills the disk; it is emptied once %s"
            " takes writes again",
            self.path,
            size // 2**20,
            self.path.name,
            failure,
            self.path.name,
        )

    def _checkpoint(self) -> tuple[bool, sqlite3.Error | None]:
        """A checkpoint that waits for nobody: whether some of the log stays out of calls.db
        (a reader's snapshot holds it, or the checkpoint failed), and why it failed if it did.

        A log large only because one transaction wrote much of it (an upgrade's index built
        over a large table: 64 MB after a 1 GB calls.db's migration) is all copied, and the
        next write cuts the file back: its size alone was said as 'held by a reader' when
        nobody held it. SQLite's own checkpoints, at each commit past 4 MB of log, fail
        unsaid: with calls.db made immutable (`chattr +i`), the log grew by every write, 55 MB
        in 8 s of calls, until the disk was full, and only 'database or disk is full' was
        said."""
        conn = self.conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            return True, exc
        finally:
            conn.execute("PRAGMA busy_timeout=5000")
            self._note_marks()
        return bool(busy == 0 and copied < log), None

    def _wal_identity_now(self) -> tuple[int, int] | None:
        return self._side_identity_now("-wal")

    def _side_identity_now(self, suffix: str) -> tuple[int, int] | None:
        found = _stat(f"{self.path}{suffix}")  # a str: a Path built per write cost ~3 µs
        return None if found is None else (found.st_dev, found.st_ino)

    def _wal_gone(self, removed: bool, suffix: str = "-wal") -> None:
        """calls.db-wal removed (or replaced) under the running server: SQLite goes on
        writing to the file it opened, answering every write, while what it holds since the
        last checkpoint (every call, on a new server) is nowhere on disk by name: a crash
        loses it, another process opening calls.db reads "disk I/O error". It is copied into
        calls.db at once, and nothing more is written: the server must reopen the database.
        Its calls.db-shm (`suffix`) alike: the server went on with the index of the log it
        had mapped, and another process opening calls.db made a new one, with a write lock
        of its own: a write it committed (a `sqlite3` shell's) was overwritten in the log by
        the server's next, silently, and it read the server's later writes not at all."""
        self.restart_needed = True
        what = " (the log's shared-memory index)" if suffix == "-shm" else ""
        error = DatabaseGone(
            f"{self.path}{suffix}{what} was {'removed' if removed else 'replaced'} under the"
            " running server: nothing more is written to the database; restart the server"
        )
        if not self._gone_said and suffix == "-shm":
            # The log is left as it is, for the restart to read: a checkpoint through the
            # index we hold would not know another process's writes since (a `sqlite3`
            # shell's, which its exit copies into calls.db), and would put older pages over
            # them or start the log anew over them (measured: the shell's insert lost).
            self._gone_said = True
            logger.critical("%s (the log is left for the restart to read)", error)
        if not self._gone_said:
            self._gone_said = True
            try:
                busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                saved = f"what the log held was copied into {self.path}" if busy == 0 else ""
            except sqlite3.Error as exc:
                saved = ""
                logger.error("calls database: copying its removed log failed: %s", exc)
            logger.critical(
                "%s (%s)",
                error,
                saved or "stop it with SIGTERM, not SIGKILL: it copies the log as it closes",
            )
        raise error

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        if not self._may_migrate:  # before anything writes (WAL mode is in the header too)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                raise DatabaseError(
                    f"{self.path} has schema version {version}, older than this code's"
                    f" ({SCHEMA_VERSION}); the server migrates it when it starts"
                )
        _enter_wal(conn)
        # Every commit synced to the disk before it returns (in WAL mode, NORMAL syncs only
        # at checkpoints, every ~4 MB of log): a loss of the machine (power, a kernel panic)
        # lost every call since the last one, dialled and answered 200, its Idempotency-Key
        # with it (a retry called the person again), and do-not-call entries.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA temp_store={TEMP_STORE}")
        # What is deleted or rewritten is overwritten, not left in free space (an erased
        # conversation's bytes), whatever the SQLite build's default.
        conn.execute("PRAGMA secure_delete=ON")
        with _Transaction(conn):  # the writer lock: one process migrates at a time
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DatabaseNewer(
                    f"{self.path} has schema version {version}, newer than this code"
                    f" ({SCHEMA_VERSION})"
                )
            repaired = _apply_renumbered(conn, version) if self._may_migrate else ()
            pending = [m for m in MIGRATIONS if m.version > version]
            if pending and version > 0:  # a new file's schema is made in a blink
                logger.info(
                    "calls database %s: migrating from schema version %d to %d; nothing is"
                    " served until it is done (an index built over a large table takes a"
                    " while: seconds a GB)",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                )
            for migration in pending:
                for statement in migration.statements:
                    conn.execute(statement)
            if version < 3 <= SCHEMA_VERSION and pending:
                conn.execute(MARK_FIRST_RELEASE_DIALS)
            if pending:
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        if repaired:
            logger.warning(
                "calls database %s: migrations %s had been skipped (a release of 2026-12-04,"
                " since backed out, migrated it and gave their numbers to one of its own);"
                " applied now",
                self.path,
                describe(repaired),
            )
        if pending:
            logger.info(
                "calls database %s at schema version %d (was %d)",
                self.path,
                SCHEMA_VERSION,
                version,
            )

    async def probe_write(self, instance: str) -> None:
        """The readiness probe's write, after a look at the free space: its one-row upsert
        still fits on a full disk where a call's inserts do not (probed: /readyz said ready
        while every call got 503)."""
        await self._submit(self._enough_space)
        program = probe_write(SQLITE, instance, self._clock())
        await self._submit_to(self._worker, self._probe_sync, program, wait_s=QUEUE_WAIT_S)
        self._writes_taken()

    def _probe_sync(self, program: Program[None]) -> None:
        """The probe's write. After a write failed on the disk, with as much written as a
        call's (and the log emptied first, which a full disk may need): its one row still fit
        where a call's inserts did not (a log stopped by a file size limit or a quota, with
        space on the device: /readyz said ready while every call got 503)."""
        conn = self.conn
        self._still_ours()
        large = self._disk_failure
        if large:
            with contextlib.suppress(sqlite3.Error):
                self._empty_wal_sync()
        try:
            with self._lock_watch(conn, probe=True), _Transaction(conn):
                _drive(conn, program)
                if large:
                    conn.execute(
                        "INSERT INTO readiness (instance, at) VALUES (?, zeroblob(?))",
                        (PROBE_ROW, MIN_FREE_BYTES),
                    )
                    conn.execute("DELETE FROM readiness WHERE instance = ?", (PROBE_ROW,))
        except sqlite3.Error as exc:
            # Opened read-only (another user's calls.db) or no -wal made beside it: the
            # first write is where SQLite says so, as "attempt to write a readonly database".
            if not _is_busy(exc) and (problem := access_problem(self.path)) is not None:
                raise DatabaseAccessDenied(problem) from exc
            raise
        if large:
            self._disk_failure = False

    def _enough_space(self) -> None:
        try:
            status = os.statvfs(self.path.parent)
        except OSError as exc:  # its directory gone: the write below says what else is wrong
            raise DatabaseError(f"{self.path.parent}: {exc.strerror}") from exc
        free = status.f_bavail * status.f_frsize
        if free < MIN_FREE_BYTES:
            raise DatabaseError(
                f"{self.path}: {free // 1024} KiB free on its device; a call's write needs more"
            )

    def stop_by(self, deadline: float) -> None:
        """Each step of a stop behind a write that never returns (a stalled disk: the
        campaigns handed over, the sandbox's calls settled, the events acknowledged, the
        close) waited its own QUEUE_WAIT_S after the one before, 40 s or more, past
        Kubernetes' 30 s grace; now none waits past `deadline`, all of them together."""
        self._stop_deadline = deadline
        self._stop_began = asyncio.get_running_loop().time()

    async def close(self) -> None:
        """Close both connections, each on its thread, once what is queued before ran. A
        thread that does not answer by QUEUE_WAIT_S (a stalled disk) is left running, said
        with how many requests it had not finished: a SIGTERM during a stall never finished
        the server's stop (only SIGKILL ended it)."""
        self._closing = True  # no new reads' thread from here on
        reader, self._reader = self._reader, None  # closing twice closes once
        if reader is not None:
            await self._close_on(reader, self._close_reader_sync)
        if self._conn is not None and not self._worker.stopping:
            await self._close_on(self._worker, self._close_sync)
        self._worker.shutdown(wait=not self._worker.abandoned)
        # Writes still failing on its disk: those held back since the last line, never
        # counted else (as PostgreSQL's, LiveKit's and config.json's at the stop).
        what = f"calls database {self.path} (writes failing on its disk)"
        say_held_back_at_stop(self._disk_outage, self.repeats, logger, what)

    async def _close_on(self, worker: _Worker, close: Callable[[], None]) -> None:
        started = min(asyncio.get_running_loop().time(), self._stop_began)
        # A thread with nothing to finish (the list reads' one, beside a stalled write) is
        # closed in its own short wait, not the stop's budget the stall used up: it was said
        # abandoned, "did not answer", though it had never been asked anything.
        idle = worker.unfinished() == 0
        try:
            await self._submit_to(
                worker,
                close,
                wait_s=IDLE_CLOSE_WAIT_S if idle else QUEUE_WAIT_S,
                budgeted=not idle,
            )
        except DatabaseStalled:
            worker.abandoned = True
            logger.error(
                "calls database %s did not answer as the server stops (its disk stalls;"
                " waited %.0f s): stopping without it; %d request(s) on it abandoned unfinished (a"
                " write among them may land if the disk lets it before the process ends, or"
                " is lost)",
                self.path,
                asyncio.get_running_loop().time() - started,
                worker.unfinished(),
            )
        worker.shutdown(wait=not worker.abandoned)

    def _close_reader_sync(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        for fd in (self._shm_fd, self._db_fd):
            if fd is not None:
                os.close(fd)
        self._shm_fd = self._db_fd = None

    async def erase_call_data(self, ended_before: float, limit: int) -> int:
        """As every store erases, then the write-ahead log copied into the file and emptied:
        the pages that held the erased conversations stayed in calls.db-wal, and in calls.db
        until a checkpoint (hours later on an idle server), readable by whoever copies the
        files. A reader holding the log up puts it off to the next erasure's call."""
        erased = await super().erase_call_data(ended_before, limit)
        if erased or self._wal_holds_erased:
            self._wal_holds_erased = not await self._submit(self._empty_wal_sync)
        return erased

    async def erase_calls_now(
        self,
        *,
        call_id: str | None = None,
        numbers: Sequence[str] = (),
        before_erasing: BeforeErasing | None = None,
    ) -> Erasure:
        """As every store erases, then the write-ahead log emptied, as the retention's."""
        try:
            erasure = await super().erase_calls_now(
                call_id=call_id, numbers=numbers, before_erasing=before_erasing
            )
        except ErasureUnfinished:
            self._wal_holds_erased = True  # emptied by the next erasure or retention pass
            raise
        if erasure.erased or erasure.recipients or self._wal_holds_erased:
            self._wal_holds_erased = not await self._submit(self._empty_wal_sync)
        return erasure

    def _empty_wal_sync(self) -> bool:
        """`PRAGMA wal_checkpoint(TRUNCATE)`, not waiting for readers; whether it was done."""
        self._still_ours()
        conn = self.conn
        conn.execute("PRAGMA busy_timeout=0")
        try:
            busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        finally:
            conn.execute("PRAGMA busy_timeout=5000")
            self._note_marks()
        return busy == 0

    # ----------------------------------------------------------------- running programs

    async def _run(self, program: Program[T], *, write: bool) -> T:
        result: T = await self._submit_to(
            self._worker, self._run_sync, program, write, together=write, wait_s=QUEUE_WAIT_S
        )
        if write:
            self._writes_taken()
        return result

    async def _run_to_its_end(self, program: Program[T]) -> T:
        """As `_run`, but once begun it is answered only when it returns: a campaign's row
        that ran QUEUE_WAIT_S (a stalled disk) was answered 503, Retry-After, and landed
        once the disk let it, the campaign running; the retry without an Idempotency-Key
        made a second one, every recipient called twice. Not begun by then, it is answered
        503 without being run, as any request."""
        result: T = await self._submit_to(
            self._worker,
            self._run_sync,
            program,
            True,
            together=True,
            wait_s=QUEUE_WAIT_S,
            begun_wait_s=math.inf,
        )
        self._writes_taken()
        return result

    def _writes_taken(self) -> None:
        """A write went through: after writes failed on the disk, said once, with for how
        long and how many failures were held back. The log said 'calls database error:
        database or disk is full' once a minute, and nothing once the disk took writes again
        (only /readyz's 'ready again', when probed), nor the failures after that line (1302
        in its minute, on a full 2 MB tmpfs under calls and their webhooks). Only with
        room on the disk (MIN_FREE_BYTES, as /readyz asks): on a full one, a write that
        changed nothing (the campaign scheduler's poll, each second) went through, and
        this line and the next failure's were said, a pair a second."""
        if self._short_of_space and self._free_bytes < MIN_FREE_BYTES:
            return
        if (ended := self._disk_outage.ended(self.repeats)) is not None:
            logger.warning(
                "calls database %s takes writes again (writes failed on its disk for %.0f s;"
                " %d more failure(s) held back since the last line said one)",
                self.path,
                ended.lasted_s,
                ended.held,
            )

    def _run_sync(self, program: Program[T], write: bool) -> T:
        conn = self.conn
        if not write:
            return _drive(conn, program)
        self._still_ours()
        self._make_room()
        with self._lock_watch(conn), _Transaction(conn):
            return _drive(conn, program)

    def _make_room(self) -> None:
        """Before a write, while short of space (`_short_of_space`): the log emptied into
        calls.db, so the write takes the space freed on a full disk in calls.db, one
        transaction's worth of log at a time, rather than in a log that fills it again
        before SQLite empties it, and which no checkpoint can then empty (calls.db cannot
        grow by what it holds). A failed write, or under ROOM_AGAIN_BYTES free (looked at
        every SPACE_LOOK_EVERY_S), begins it; ROOM_AGAIN_BYTES free ends it."""
        if not self._short_of_space:
            now = time.monotonic()
            if now - self._space_looked_at < SPACE_LOOK_EVERY_S:
                return
            self._space_looked_at = now
        try:
            status = os.statvfs(self.path.parent)
        except OSError:
            return  # its directory gone: the write says what is wrong
        self._free_bytes = status.f_bavail * status.f_frsize
        self._short_of_space = self._free_bytes < ROOM_AGAIN_BYTES
        if not self._short_of_space:
            return
        with contextlib.suppress(sqlite3.Error):  # no room yet: the write fails as it would
            self._empty_wal_sync()

    def _failed_on_disk(self, exc: BaseException, probe: bool) -> None:
        """After a write failed: one that failed on the disk is noted for the readiness probe,
        and the log is emptied into calls.db at once. A log that cannot grow (a file size
        limit, a quota) failed every write from then on, as SQLite empties it only once it
        is 4 MB; on a full disk, the log's space is what it frees."""
        if not _is_disk_error(exc):
            return
        self._disk_failure |= not probe
        self._short_of_space, self._free_bytes = True, 0
        self._size_limit_hit = _at_size_limit(self.path)  # the log as it failed: emptied below
        with contextlib.suppress(sqlite3.Error, DatabaseError):
            self._empty_wal_sync()

    @contextlib.contextmanager
    def _lock_watch(self, conn: sqlite3.Connection, probe: bool = False) -> Iterator[None]:
        """Around a write transaction: another process holding the lock past the busy
        timeout is DatabaseLocked, said once with who holds it; from then on each write waits
        LOCKED_BUSY_TIMEOUT_MS for the lock, not the whole busy timeout, until one gets it
        (said too): the writes queued meanwhile are answered at once, not 5 s each in turn.
        A write (not the probe's) failing on the disk is noted for the readiness probe."""
        started = time.monotonic()
        locked = self._locked_since is not None
        if locked:
            busy_timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
            conn.execute(f"PRAGMA busy_timeout={LOCKED_BUSY_TIMEOUT_MS}")
        try:
            yield
        except _TransactionLost as lost:
            self._failed_on_disk(lost.error, probe)
            raise
        except sqlite3.Error as exc:
            self._failed_on_disk(exc, probe)
            if not _is_busy(exc):
                raise
            if self._locked_since is None:
                self._locked_since = started
                holder = _lock_holder(self.path)
                logger.error(
                    "calls database %s is locked by %s: writes are refused (503) until it lets go",
                    self.path,
                    holder or "another process",
                )
            raise DatabaseLocked("the calls database is locked by another process") from exc
        else:
            if self._locked_since is not None:
                logger.warning(
                    "calls database %s takes writes again (locked for %.0f s)",
                    self.path,
                    time.monotonic() - self._locked_since,
                )
                self._locked_since = None
        finally:
            if locked:
                conn.execute(f"PRAGMA busy_timeout={busy_timeout}")
            self._note_marks()

    async def _read_aside(self, program: Program[T]) -> T:
        """On a second connection, read-only, on a thread of its own: a count over every
        call took 75-145 ms at 1,000,000 calls, and on the one database thread every write
        queued behind it (a call's intake, its webhooks) waited that long; a client polling
        the API's pages (`GET /calls?limit=500` back to back) held the writes the same way,
        page after page. SQLite lets go of the GIL while it steps, and WAL lets a reader run
        beside the writer; the reader sees what was committed when it started, as a read on
        the first connection would. A file removed or replaced under the server can no
        longer be opened again: these reads stay on the first connection then, as its other
        reads do. (`:memory:` is refused at open.)"""
        if self._reader is None:
            opened = self._identity
            if self._closing or opened is None or self._identity_now() != opened:
                return await self._run(program, write=False)
            self._reader = _Worker("calls-db-reads")
        result: T = await self._submit_to(
            self._reader, self._read_aside_sync, program, wait_s=QUEUE_WAIT_S
        )
        return result

    def _read_aside_sync(self, program: Program[T]) -> T:
        if self._reader_conn is None:  # read-only: a file removed meanwhile is not made anew
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(f"PRAGMA temp_store={TEMP_STORE}")
            self._reader_conn = conn
        # In one read transaction: one snapshot for all of its queries. Each on its own saw
        # the commits made between them (on the database's one thread no write comes between
        # a program's queries): a recipient read before its attempt began, its attempts
        # after, showed `pending` with an attempt and no next_attempt_at.
        with _Transaction(self._reader_conn, "BEGIN"):
            return _drive(self._reader_conn, program)

    def _run_writes_together(self, calls: list[_Call]) -> list[Outcome]:
        """Write programs queued at once (each call is `_run_sync(program, True)`), in one
        transaction: each in a savepoint of its own, so one that raises is rolled back alone,
        as if in its own transaction, and one COMMIT for all (a COMMIT costs more than most of
        our statements). If the COMMIT fails, none of them was written: all get the error.
        The first needs no savepoint (nothing is before it: the transaction is rolled back
        and begun again), and the last's is released by the COMMIT."""
        outcomes: list[Outcome] = []
        last = len(calls) - 1
        try:
            conn = self.conn  # closed: each gets the error (raised here, it killed the thread)
            self._still_ours()
            self._make_room()
            with self._lock_watch(conn), _Transaction(conn):
                for n, call in enumerate(calls):
                    if n:
                        conn.execute("SAVEPOINT program")
                    try:
                        outcomes.append((call, _drive(conn, call.args[0]), None))
                    except BaseException as exc:
                        if not conn.in_transaction:
                            raise _TransactionLost(n, exc) from None
                        if n:
                            conn.execute("ROLLBACK TO program")
                        else:
                            conn.execute("ROLLBACK")
                            conn.execute("BEGIN IMMEDIATE")
                        outcomes.append((call, None, exc))
                    if 0 < n < last:
                        conn.execute("RELEASE program")
        except _TransactionLost as lost:
            # SQLite rolled the whole transaction back itself (disk full, I/O error): the
            # programs before the failing one were not written either; the rest run anew.
            failed: list[Outcome] = [(c, None, lost.error) for c in calls[: lost.index + 1]]
            rest = calls[lost.index + 1 :]
            return [*failed, *(self._run_writes_together(rest) if rest else [])]
        except BaseException as exc:  # BEGIN, a savepoint or the COMMIT failed
            return [(call, None, exc) for call in calls]
        return outcomes

    async def _submit(self, fn: Callable[..., T], *args: Any, together: bool = False) -> T:
        return await self._submit_to(self._worker, fn, *args, together=together)

    async def _submit_to(
        self,
        worker: _Worker,
        fn: Callable[..., T],
        *args: Any,
        together: bool = False,
        wait_s: float | None = None,
        begun_wait_s: float | None = None,
        budgeted: bool = True,
    ) -> T:
        """fn(*args) on `worker`; with `wait_s`, DatabaseStalled if it has not begun by then,
        or has run as long (`begun_wait_s`, if given) without returning. Once the server
        stops, `wait_s` is cut to what is left of the stop's budget (unless not `budgeted`)."""
        deadline = math.inf
        if wait_s is not None and budgeted and self._stop_deadline < math.inf:  # the budget
            left = max(self._stop_deadline - asyncio.get_running_loop().time(), 0.0)
            wait_s = min(wait_s, left)
            begun_wait_s = None if begun_wait_s is None else min(begun_wait_s, left)
        if begun_wait_s is None:
            begun_wait_s = math.inf if wait_s is None else wait_s
        if wait_s is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
        try:
            future = worker.submit(
                fn,
                *args,
                together=together,
                deadline=deadline,
                wait_s=begun_wait_s,
            )
        except RuntimeError as exc:  # the worker is shut down: the database was closed
            raise DatabaseError("calls database is closed") from exc
        if wait_s is not None and (worker.watchdog is None or deadline < worker.watchdog.when()):
            if worker.watchdog is not None:  # armed for a later deadline than this one's
                worker.watchdog.cancel()
            worker.watchdog = loop.call_at(deadline, self._watch, worker, wait_s)
        try:
            result = await future
        except sqlite3.Error as exc:
            why, limit = str(exc), self._size_limit_hit
            self._size_limit_hit = None
            if _is_disk_error(exc):
                self._disk_outage.failed("error")  # (its Repeats key, below)
                if (limit := limit or _at_size_limit(self.path)) is not None:
                    why = f"{why}: {limit}"
            if (more := self.repeats.due("error")) is not None:
                logger.error("calls database error: %s%s", why, more)
            raise DatabaseError(why) from exc
        if worker.stalled_since is not None:
            logger.warning(
                "calls database %s answers again (held up for %.0f s)",
                self.path,
                asyncio.get_running_loop().time() - worker.stalled_since,
            )
            worker.stalled_since = None
        return result

    def _watch(self, worker: _Worker, waited_s: float) -> None:
        """The calls whose deadline passed (each waited `waited_s` for its turn): taken out of
        the queue and answered DatabaseStalled (said once, then once it answers again). One
        already begun is answered so too once it has run `waited_s` without returning, and
        left to finish: its own write is what the disk holds, and it may yet commit (its
        request had no answer at all, for as long as the disk stalled; a call's row that
        lands later is never dialled: the reaper settles it).
        One done while a later call of its batch has not returned is handed back now. Then
        armed again for the next deadline, while a call with one is pending."""
        loop = asyncio.get_running_loop()
        worker.watchdog = None
        late, stuck, done, soonest = worker.overdue(loop.time())
        _deliver(done)
        for call in [*late, *stuck]:
            if call.future.done():  # its request went meanwhile (cancelled): nothing to answer
                continue
            if worker.stalled_since is None:
                worker.stalled_since = loop.time() - waited_s
                logger.error(
                    "calls database %s has not answered for %.0f s (a statement still runs:"
                    " its disk stalls, or a transaction is very long): requests waiting on it"
                    " are answered 503",
                    self.path,
                    waited_s,
                )
            call.future.set_exception(
                DatabaseStalled(f"the calls database did not answer in {waited_s:.0f} s")
            )
        if soonest < math.inf:
            worker.watchdog = loop.call_at(soonest, self._watch, worker, waited_s)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError("calls database is closed")
        return self._conn


def _drive(conn: sqlite3.Connection, program: Program[T]) -> T:
    """Run `program` to its end on `conn`: each query's rows are sent back into it."""
    try:
        query = next(program)
        while True:
            # fetchall: a statement still stepping would block the COMMIT
            rows: list[Row] = conn.execute(query.sql, query.args).fetchall()
            query = program.send(rows)
    except StopIteration as done:
        result: T = done.value
        return result


class _TransactionLost(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.index = index
        self.error = error


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (nothing half-written); `begin`
    "BEGIN" for a read (its snapshot taken at its first query)."""

    def __init__(self, conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> None:
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> None:
        self._conn.execute(self._begin)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._rollback()  # the original error is the one reported
            return
        try:
            self._conn.execute("COMMIT")
        except sqlite3.Error:
            # SQLite may or may not have rolled back a failed COMMIT; make sure, or every
            # later BEGIN fails with "cannot start a transaction within a transaction".
            self._rollback()
            raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
