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
import datetime
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

SCHEMA_VERSION = 3
T = TypeVar("T")

# Every schema version as the step from the one before it; a new database runs them all.
_MIGRATIONS: dict[int, str] = {
    1: """
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
    PRIMARY KEY (client, key)
);
""",
    2: "ALTER TABLE idempotency ADD COLUMN request_hash TEXT NOT NULL DEFAULT '';",
    # Per-call limits and config snapshot; room_finished awaiting its grace; the idempotency
    # key recorded with its call before anything is dialled (the answer comes later).
    3: """
ALTER TABLE calls ADD COLUMN ringing_timeout_s INTEGER;
ALTER TABLE calls ADD COLUMN max_duration_s INTEGER;
ALTER TABLE calls ADD COLUMN config TEXT;
ALTER TABLE calls ADD COLUMN room_finished_at REAL;
ALTER TABLE calls ADD COLUMN dial_started_at REAL;
CREATE INDEX IF NOT EXISTS calls_room_finished ON calls (room_finished_at)
    WHERE room_finished_at IS NOT NULL;
CREATE TABLE idempotency_v3 (
    client TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    call_id TEXT NOT NULL,
    status INTEGER,
    body TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (client, key)
);
INSERT INTO idempotency_v3
    SELECT client, key, request_hash, COALESCE(json_extract(body, '$.call_id'), ''),
           status, body, created_at
    FROM idempotency;
DROP TABLE idempotency;
ALTER TABLE idempotency_v3 RENAME TO idempotency;
CREATE TABLE readiness (instance TEXT PRIMARY KEY, at REAL NOT NULL);
""",
}

_LIVE = tuple(s.value for s in LIVE_STATUSES)


class DatabaseError(Exception):
    """The calls database could not do what was asked; callers answer 503."""


@dataclass(frozen=True)
class IdempotencyClaim:
    """An Idempotency-Key to record with a new call: whose it is and what it was sent with."""

    client: str
    key: str
    request_hash: str


@dataclass(frozen=True)
class StoredAnswer:
    """What an Idempotency-Key is bound to: its call, and the answer once one was given.

    `status` and `body` are None while the call is being placed (or when the server died
    before answering): a retry then gets the call as it is, never a second call.
    """

    call_id: str
    request_hash: str
    status: int | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewCall:
    call_id: str
    phone_number: str
    caller_name: str
    language: str
    emotion: str
    ringing_timeout_s: int = 30
    max_duration_s: int = 600
    config: dict[str, Any] = field(default_factory=dict)


def iso_time(at: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string with milliseconds (None stays None)."""
    if at is None:
        return None
    stamp = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
            "at": iso_time(self.at),
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
    ringing_timeout_s: int | None = None
    max_duration_s: int | None = None
    config: dict[str, Any] | None = None
    room_finished_at: float | None = None

    @property
    def state(self) -> CallState:
        return CallState(
            self.status, self.answered, self.hangup_requested, self.room_finished_at is not None
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def duration_s(self, now: float | None = None) -> float:
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return max(0.0, end - self.created_at)

    @property
    def ring_s(self) -> float | None:
        """From placing the call to the answer (or to its end, if never answered)."""
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return None if end is None else round(max(0.0, end - self.created_at), 3)

    @property
    def talk_s(self) -> float | None:
        """From the answer to the end; 0 for a call that ended unanswered, None while live."""
        if self.ended_at is None:
            return None
        if self.answered_at is None:
            return 0.0
        return round(max(0.0, self.ended_at - self.answered_at), 3)

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
            "created_at": iso_time(self.created_at),
            "answered_at": iso_time(self.answered_at),
            "ended_at": iso_time(self.ended_at),
            "updated_at": iso_time(self.updated_at),
            "ring_s": self.ring_s,
            "talk_s": self.talk_s,
            "ringing_timeout_s": self.ringing_timeout_s,
            "max_duration_s": self.max_duration_s,
        }
        if with_timeline:
            doc["config"] = self.config
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
    config = row["config"]
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
        ringing_timeout_s=row["ringing_timeout_s"],
        max_duration_s=row["max_duration_s"],
        config=json.loads(config) if config else None,
        room_finished_at=row["room_finished_at"],
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

    async def insert_call(
        self,
        call: NewCall,
        detail: dict[str, Any] | None = None,
        claim: IdempotencyClaim | None = None,
    ) -> StoredAnswer | None:
        """Record a new call (status dialing) and, in the same transaction, its key.

        Returns None when the call was recorded; when `claim`'s key is already bound to a call,
        records nothing and returns what the key is bound to.
        """
        result: StoredAnswer | None = await self._run(self._insert_sync, call, detail or {}, claim)
        return result

    def _insert_sync(
        self, call: NewCall, detail: dict[str, Any], claim: IdempotencyClaim | None
    ) -> StoredAnswer | None:
        now = self._clock()
        with self._transaction():
            if claim is not None:
                taken = self.conn.execute(
                    "INSERT INTO idempotency (client, key, request_hash, call_id, created_at)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (claim.client, claim.key, claim.request_hash, call.call_id, now),
                ).rowcount
                if not taken:
                    return self._get_idem_sync(claim.client, claim.key)
            self.conn.execute(
                "INSERT INTO calls (call_id, phone_number, caller_name, language, emotion,"
                " status, created_at, updated_at, ringing_timeout_s, max_duration_s, config)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    call.call_id,
                    call.phone_number,
                    call.caller_name,
                    call.language,
                    call.emotion,
                    Status.DIALING.value,
                    now,
                    now,
                    call.ringing_timeout_s,
                    call.max_duration_s,
                    json.dumps(call.config, ensure_ascii=False),
                ),
            )
            self._add_event(call.call_id, None, "created", None, Status.DIALING, detail, now)
        return None

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None:
        return await self._run(self._get_sync, call_id, with_timeline)

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

    async def stale_live_calls(self, now: float, margin_s: float) -> list[str]:
        """Live calls older than their own ringing timeout + max duration + `margin_s`."""
        return await self._run(self._stale_sync, now, margin_s)

    def _stale_sync(self, now: float, margin_s: float) -> list[str]:
        marks = ",".join("?" * len(_LIVE))
        rows = self.conn.execute(
            f"SELECT call_id FROM calls WHERE status IN ({marks})"  # noqa: S608
            " AND created_at + COALESCE(ringing_timeout_s, 0) + COALESCE(max_duration_s, 0)"
            " + ? < ?",
            (*_LIVE, margin_s, now),
        )
        return [str(r[0]) for r in rows]

    async def graceless_finished(self, finished_before: float) -> list[str]:
        """Live calls whose room finished before `finished_before` (their grace is over)."""
        return await self._run(self._graceless_sync, finished_before)

    def _graceless_sync(self, finished_before: float) -> list[str]:
        marks = ",".join("?" * len(_LIVE))
        rows = self.conn.execute(
            f"SELECT call_id FROM calls WHERE room_finished_at < ?"  # noqa: S608
            f" AND status IN ({marks})",
            (finished_before, *_LIVE),
        )
        return [str(r[0]) for r in rows]

    async def live_among(self, call_ids: list[str]) -> set[str]:
        """Which of `call_ids` are calls in a live status (unknown ids are not)."""
        return await self._run(self._live_among_sync, call_ids)

    async def known_among(self, call_ids: list[str]) -> set[str]:
        """Which of `call_ids` the database has a row for."""
        return await self._run(self._among_sync, call_ids, ())

    def _live_among_sync(self, call_ids: list[str]) -> set[str]:
        return self._among_sync(call_ids, _LIVE)

    def _among_sync(self, call_ids: list[str], statuses: tuple[str, ...]) -> set[str]:
        found: set[str] = set()
        where = f" AND status IN ({','.join('?' * len(statuses))})" if statuses else ""
        for start in range(0, len(call_ids), 500):  # SQLite caps bound parameters
            chunk = call_ids[start : start + 500]
            ids = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT call_id FROM calls WHERE call_id IN ({ids}){where}",  # noqa: S608
                (*chunk, *statuses),
            )
            found.update(str(r[0]) for r in rows)
        return found

    async def probe_write(self, instance: str) -> None:
        """Commit a one-row write, as readiness must: a write that is rolled back never
        reaches the disk, so it passes on a full disk where every call's insert fails."""
        await self._run(self._probe_sync, instance)

    def _probe_sync(self, instance: str) -> None:
        with self._transaction():
            self.conn.execute(
                "INSERT INTO readiness (instance, at) VALUES (?, ?)"
                " ON CONFLICT (instance) DO UPDATE SET at = excluded.at",
                (instance, self._clock()),
            )

    async def start_dial(self, call_id: str) -> CallRecord | None:
        """Mark that the dial request is about to go out; returns the call as it now is.

        Committed before the request is sent, so a call without the mark was never dialled
        (a server that died before dialling leaves such calls for the reaper to settle).
        """
        return await self._run(self._start_dial_sync, call_id)

    def _start_dial_sync(self, call_id: str) -> CallRecord | None:
        with self._transaction():
            rows = self.conn.execute(
                "UPDATE calls SET dial_started_at = ? WHERE call_id = ? RETURNING *",
                (self._clock(), call_id),
            ).fetchall()
        return _row_to_call(rows[0]) if rows else None

    async def never_dialled(self, created_before: float) -> list[str]:
        """Calls still dialing, created before `created_before`, whose dial never went out."""
        return await self._run(self._never_dialled_sync, created_before)

    def _never_dialled_sync(self, created_before: float) -> list[str]:
        rows = self.conn.execute(
            "SELECT call_id FROM calls WHERE status = ? AND dial_started_at IS NULL"
            " AND created_at < ?",
            (Status.DIALING.value, created_before),
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
        room_finished: bool = False,
    ) -> Applied:
        """In one transaction: dedupe by event id, decide the change, store it and the event.

        `room_finished`: the event says the room is gone; recorded before deciding, so the
        decision (and any later one) knows.
        """
        return await self._run(
            self._apply_sync, call_id, kind, decide, event_id, detail or {}, room_finished
        )

    def _apply_sync(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        event_id: str | None,
        detail: dict[str, Any],
        room_finished: bool,
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
            if room_finished:
                self.conn.execute(
                    "UPDATE calls SET room_finished_at = COALESCE(room_finished_at, ?)"
                    " WHERE call_id = ?",
                    (now, call_id),
                )
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
            "SELECT call_id, request_hash, status, body FROM idempotency"
            " WHERE client = ? AND key = ?",
            (client, key),
        ).fetchone()
        if row is None:
            return None
        body = json.loads(row["body"]) if row["body"] is not None else None
        return StoredAnswer(str(row["call_id"]), str(row["request_hash"]), row["status"], body)

    async def answer_idempotent(
        self, client: str, key: str, status: int, body: dict[str, Any]
    ) -> None:
        """Store the answer given under a key recorded with `insert_call`."""
        await self._run(self._answer_idem_sync, client, key, status, body)

    def _answer_idem_sync(self, client: str, key: str, status: int, body: dict[str, Any]) -> None:
        with self._transaction():
            self.conn.execute(
                "UPDATE idempotency SET status = ?, body = ? WHERE client = ? AND key = ?",
                (status, json.dumps(body, ensure_ascii=False), client, key),
            )

    async def release_idempotent(self, client: str, key: str, call_id: str) -> None:
        """Free a key whose call was never dialled, so a retry may place the call anew."""
        await self._run(self._release_idem_sync, client, key, call_id)

    def _release_idem_sync(self, client: str, key: str, call_id: str) -> None:
        with self._transaction():
            self.conn.execute(
                "DELETE FROM idempotency WHERE client = ? AND key = ? AND call_id = ?",
                (client, key, call_id),
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
