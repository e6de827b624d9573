"""Embedded SQLite store of calls, their event timelines and idempotent answers.

One connection lives on one dedicated thread, so the event loop never waits on SQLite and
every multi-statement change (dedupe + read state + write state + timeline) is one
transaction. The schema is created and versioned here.

The thread runs every queued call each time it wakes and hands the whole batch of results back
to the loop at once: a thread hop costs ~0.03-0.1 ms of CPU on a small VM, more than most of
our statements, and under load most calls then share one (see bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common.outcomes import FINAL_STATUSES, LIVE_STATUSES, CallState, Change, Status

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    phone_number TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    language TEXT NOT NULL,
    emotion TEXT NOT NULL,
    status TEXT NOT NULL,
    outcome TEXT,
    reason TEXT,
    answered INTEGER NOT NULL DEFAULT 0,
    hangup_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    answered_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_created ON calls (created_at);
CREATE INDEX IF NOT EXISTS calls_status_created ON calls (status, created_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL REFERENCES calls (call_id),
    event_id TEXT,
    kind TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    detail TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_call ON events (call_id, id);
CREATE TABLE IF NOT EXISTS idempotency (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    request_hash TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (client, key)
);
"""
# Steps from one schema version to the next, for databases made by older code.
_MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE idempotency ADD COLUMN request_hash TEXT NOT NULL DEFAULT '';",
}

_LIVE = tuple(s.value for s in LIVE_STATUSES)


class DatabaseError(Exception):
    """The calls database could not do what was asked; callers answer 503."""


@dataclass(frozen=True)
class StoredAnswer:
    """The first answer given under an Idempotency-Key, and a hash of the request it answered."""

    status: int
    body: dict[str, Any]
    request_hash: str


@dataclass(frozen=True)
class NewCall:
    call_id: str
    phone_number: str
    caller_name: str
    language: str
    emotion: str


@dataclass(frozen=True)
class TimelineEntry:
    kind: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]
    at: float
    event_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "from": self.from_status,
            "to": self.to_status,
            "at": self.at,
            "event_id": self.event_id,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    phone_number: str
    caller_name: str
    language: str
    emotion: str
    status: Status
    outcome: str | None
    reason: str | None
    answered: bool
    hangup_requested: bool
    created_at: float
    answered_at: float | None
    ended_at: float | None
    updated_at: float
    timeline: tuple[TimelineEntry, ...] = field(default=())

    @property
    def state(self) -> CallState:
        return CallState(self.status, self.answered, self.hangup_requested)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def duration_s(self, now: float | None = None) -> float:
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return max(0.0, end - self.created_at)

    def to_json(self, *, with_timeline: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "call_id": self.call_id,
            "room": self.call_id,
            "phone_number": self.phone_number,
            "name": self.caller_name,
            "language": self.language,
            "emotion": self.emotion,
            "status": self.status.value,
            "outcome": self.outcome,
            "reason": self.reason,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "updated_at": self.updated_at,
            "duration_s": round(self.duration_s(), 3) if self.ended_at else None,
        }
        if with_timeline:
            doc["timeline"] = [entry.to_json() for entry in self.timeline]
        return doc


@dataclass(frozen=True)
class Applied:
    """What applying one event did."""

    duplicate: bool = False
    unknown_call: bool = False
    change: Change | None = None
    before: CallRecord | None = None
    after: CallRecord | None = None


Decide = Callable[[CallState], Change | None]


def _row_to_call(row: sqlite3.Row, timeline: tuple[TimelineEntry, ...] = ()) -> CallRecord:
    return CallRecord(
        call_id=row["call_id"],
        phone_number=row["phone_number"],
        caller_name=row["caller_name"],
        language=row["language"],
        emotion=row["emotion"],
        status=Status(row["status"]),
        outcome=row["outcome"],
        reason=row["reason"],
        answered=bool(row["answered"]),
        hangup_requested=bool(row["hangup_requested"]),
        created_at=row["created_at"],
        answered_at=row["answered_at"],
        ended_at=row["ended_at"],
        updated_at=row["updated_at"],
        timeline=timeline,
    )


@dataclass(frozen=True)
class _Call:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]


Outcome = tuple[_Call, Any, BaseException | None]


class _Worker:
    """One thread that runs submitted calls in order, all that are queued per wake-up.

    Each batch's results go back to their event loop in one `call_soon_threadsafe`, instead of
    one wake-up of the loop per call (handing each result back on its own measured 2.4x the CPU
    per call under load). After `shutdown` nothing more is accepted; what was queued still
    runs.
    """

    def __init__(self, name: str) -> None:
        self._ready = threading.Condition(threading.Lock())
        self._queue: deque[_Call] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue fn(*args); raises RuntimeError once shut down."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._stopping:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.append(_Call(loop, future, fn, args))
            self._ready.notify()
        return future

    def shutdown(self, wait: bool = True) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            done: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
            for call in batch:
                outcome: Outcome
                try:
                    outcome = (call, call.fn(*call.args), None)
                except BaseException as exc:  # handed to the caller, like an executor does
                    outcome = (call, None, exc)
                done.setdefault(call.loop, []).append(outcome)
            for loop, outcomes in done.items():
                try:
                    loop.call_soon_threadsafe(_deliver, outcomes)
                except RuntimeError:  # that loop is closed: nobody is waiting any more
                    pass


def _deliver(outcomes: list[Outcome]) -> None:
    for call, result, exc in outcomes:
        if call.future.cancelled():
            continue
        if exc is None:
            call.future.set_result(result)
        else:
            call.future.set_exception(exc)


class CallsDB:
    """Async facade over one SQLite connection owned by one worker thread."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._worker = _Worker("calls-db")
        self._conn: sqlite3.Connection | None = None

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: Path, clock: Callable[[], float] = time.time) -> CallsDB:
        db = cls(path, clock)
        try:
            await db._run(db._open_sync)
        except BaseException:
            db._worker.shutdown(wait=False)
            raise
        return db

    def _open_sync(self) -> None:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseError(
                f"{self.path} has schema version {version}, newer than this code ({SCHEMA_VERSION})"
            )
        if version == 0:  # a new database: the current schema at once
            steps = _SCHEMA
        else:
            steps = "".join(_MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
        if version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN;{steps}PRAGMA user_version={SCHEMA_VERSION};COMMIT;")
            logger.info(
                "calls database %s at schema version %d (was %d)",
                self.path,
                SCHEMA_VERSION,
                version,
            )

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close_sync)
        self._worker.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            future = self._worker.submit(fn, *args)
        except RuntimeError as exc:  # the worker is shut down: the database was closed
            raise DatabaseError("calls database is closed") from exc
        try:
            return await future
        except sqlite3.Error as exc:
            logger.error("calls database error: %s", exc)
            raise DatabaseError(str(exc)) from exc

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError("calls database is closed")
        return self._conn

    # ----------------------------------------------------------------- calls

    async def insert_call(self, call: NewCall, detail: dict[str, Any] | None = None) -> None:
        await self._run(self._insert_sync, call, detail or {})

    def _insert_sync(self, call: NewCall, detail: dict[str, Any]) -> None:
        now = self._clock()
        with self._transaction():
            self.conn.execute(
                "INSERT INTO calls (call_id, phone_number, caller_name, language, emotion,"
                " status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    call.call_id,
                    call.phone_number,
                    call.caller_name,
                    call.language,
                    call.emotion,
                    Status.DIALING.value,
                    now,
                    now,
                ),
            )
            self._add_event(call.call_id, None, "created", None, Status.DIALING, detail, now)

    async def get_call(self, call_id: str) -> CallRecord | None:
        return await self._run(self._get_sync, call_id, True)

    def _get_sync(self, call_id: str, with_timeline: bool) -> CallRecord | None:
        row = self.conn.execute("SELECT * FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        if row is None:
            return None
        timeline: tuple[TimelineEntry, ...] = ()
        if with_timeline:
            timeline = tuple(
                TimelineEntry(
                    kind=e["kind"],
                    from_status=e["from_status"],
                    to_status=e["to_status"],
                    detail=json.loads(e["detail"]),
                    at=e["at"],
                    event_id=e["event_id"],
                )
                for e in self.conn.execute(
                    "SELECT * FROM events WHERE call_id = ? ORDER BY id", (call_id,)
                )
            )
        return _row_to_call(row, timeline)

    async def list_calls(
        self, *, status: Status | None = None, limit: int = 50, before: float | None = None
    ) -> list[CallRecord]:
        return await self._run(self._list_sync, status, limit, before)

    def _list_sync(
        self, status: Status | None, limit: int, before: float | None
    ) -> list[CallRecord]:
        clauses, args = [], []  # type: list[str], list[Any]
        if status is not None:
            clauses.append("status = ?")
            args.append(status.value)
        if before is not None:
            clauses.append("created_at < ?")
            args.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.conn.execute(
            f"SELECT * FROM calls {where} ORDER BY created_at DESC LIMIT ?",  # noqa: S608
            (*args, limit),
        ).fetchall()
        return [_row_to_call(r) for r in rows]

    async def count_live(self) -> int:
        return await self._run(self._count_live_sync)

    def _count_live_sync(self) -> int:
        marks = ",".join("?" * len(_LIVE))
        row = self.conn.execute(
            f"SELECT COUNT(*) FROM calls WHERE status IN ({marks})",  # noqa: S608
            _LIVE,
        ).fetchone()
        return int(row[0])

    async def count_by_status(self) -> dict[str, int]:
        return await self._run(self._count_by_status_sync)

    def _count_by_status_sync(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM calls GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    async def stale_live_calls(self, created_before: float) -> list[str]:
        return await self._run(self._stale_sync, created_before)

    def _stale_sync(self, created_before: float) -> list[str]:
        marks = ",".join("?" * len(_LIVE))
        rows = self.conn.execute(
            f"SELECT call_id FROM calls WHERE status IN ({marks}) AND created_at < ?",  # noqa: S608
            (*_LIVE, created_before),
        )
        return [str(r[0]) for r in rows]

    async def request_hangup(self, call_id: str) -> CallRecord | None:
        """Mark that the API asked to end this call; returns the call as it now is."""
        return await self._run(self._hangup_sync, call_id)

    def _hangup_sync(self, call_id: str) -> CallRecord | None:
        with self._transaction():
            self.conn.execute(
                "UPDATE calls SET hangup_requested = 1, updated_at = ? WHERE call_id = ?",
                (self._clock(), call_id),
            )
        return self._get_sync(call_id, False)

    # ----------------------------------------------------------------- events

    async def apply(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Applied:
        """In one transaction: dedupe by event id, decide the change, store it and the event."""
        return await self._run(self._apply_sync, call_id, kind, decide, event_id, detail or {})

    def _apply_sync(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        event_id: str | None,
        detail: dict[str, Any],
    ) -> Applied:
        now = self._clock()
        with self._transaction():
            if (
                event_id is not None
                and self.conn.execute(
                    "SELECT 1 FROM events WHERE event_id = ?", (event_id,)
                ).fetchone()
            ):
                return Applied(duplicate=True)
            before = self._get_sync(call_id, False)
            if before is None:
                return Applied(unknown_call=True)
            change = decide(before.state)
            after = before
            if change is not None:
                final = change.status in FINAL_STATUSES
                # RETURNING: the row as updated, without reading it again afterwards.
                rows = self.conn.execute(
                    "UPDATE calls SET status = ?, updated_at = ?,"
                    " reason = COALESCE(?, reason),"
                    " outcome = CASE WHEN ? THEN ? ELSE outcome END,"
                    " ended_at = CASE WHEN ? THEN ? ELSE ended_at END,"
                    " answered = MAX(answered, ?),"
                    " answered_at = CASE WHEN ? AND answered_at IS NULL THEN ? ELSE answered_at END"
                    " WHERE call_id = ? RETURNING *",
                    (
                        change.status.value,
                        now,
                        change.reason,
                        final,
                        change.status.value,
                        final,
                        now,
                        int(change.answered),
                        change.answered,
                        now,
                        call_id,
                    ),
                ).fetchall()  # all of it: a statement still stepping would block the COMMIT
                after = _row_to_call(rows[0])
            self._add_event(
                call_id,
                event_id,
                kind,
                before.status if change else None,
                change.status if change else None,
                detail,
                now,
            )
        return Applied(change=change, before=before, after=after)

    def _add_event(
        self,
        call_id: str,
        event_id: str | None,
        kind: str,
        from_status: Status | None,
        to_status: Status | None,
        detail: dict[str, Any],
        at: float,
    ) -> None:
        self.conn.execute(
            "INSERT INTO events (call_id, event_id, kind, from_status, to_status, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                call_id,
                event_id,
                kind,
                from_status.value if from_status else None,
                to_status.value if to_status else None,
                json.dumps(detail, ensure_ascii=False),
                at,
            ),
        )

    # ----------------------------------------------------------------- idempotency

    async def get_idempotent(self, client: str, key: str) -> StoredAnswer | None:
        return await self._run(self._get_idem_sync, client, key)

    def _get_idem_sync(self, client: str, key: str) -> StoredAnswer | None:
        row = self.conn.execute(
            "SELECT status, body, request_hash FROM idempotency WHERE client = ? AND key = ?",
            (client, key),
        ).fetchone()
        if row is None:
            return None
        return StoredAnswer(int(row[0]), json.loads(row[1]), str(row[2]))

    async def put_idempotent(
        self,
        client: str,
        key: str,
        status: int,
        body: dict[str, Any],
        request_hash: str = "",
    ) -> None:
        await self._run(self._put_idem_sync, client, key, status, body, request_hash)

    def _put_idem_sync(
        self, client: str, key: str, status: int, body: dict[str, Any], request_hash: str
    ) -> None:
        with self._transaction():
            self.conn.execute(
                "INSERT OR REPLACE INTO idempotency"
                " (client, key, status, body, created_at, request_hash)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (client, key, status, json.dumps(body), self._clock(), request_hash),
            )

    # ----------------------------------------------------------------- helpers

    def _transaction(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (nothing half-written)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

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
