"""Storage CPU per placed and settled call: hand-written transaction programs vs SQLAlchemy Core.

The team chooses the data-access approach on evidence: (A) thin hand-written backends over the
transaction programs of common/storage/programs.py, as now, or (B) SQLAlchemy Core (async).
This measures, side by side in one run, the CPU the server process spends in storage for the
life of one call, for three ways of running the same operations on the same SQLite schema:

1. ``programs+thread``: the real `SqliteCallStore` (common/storage/sqlite.py), as it is: one
   connection on a dedicated thread that runs a whole transaction program per thread hop and
   hands each batch's results back to the event loop at once.
2. ``programs+aiosqlite``: the very same programs driven over one `aiosqlite.Connection`
   (`AiosqliteProgramStore` below, a `SqlCallStore`): BEGIN IMMEDIATE / COMMIT / ROLLBACK for
   writes, autocommit reads, one `execute_fetchall` per statement (execute + fetchall in one
   thread hop), an asyncio.Lock so one transaction at a time uses the connection, and the same
   migrations.
3. ``sqlalchemy-core+aiosqlite``: the operations a call uses written again with SQLAlchemy
   Core (`CoreCallStore` below): Table objects read back from the schema the same migration
   files make (in an in-memory database at import; compared with the opened file's at open),
   `create_async_engine("sqlite+aiosqlite:///...")` with one pooled connection (as 1 and 2
   have one), BEGIN IMMEDIATE for writes (SQLAlchemy's documented `begin` event recipe),
   autocommit reads, insert()/update()/select() with .returning() where the programs use
   RETURNING, the same statements' effects in one transaction per operation, and the same pure
   helpers (row_to_call, events_for_change, event_data, the outbox's JSON encoding).

The workload per settled call mirrors common/calls/service.py for an answered call: place it
(`create_call` with the admission limits at the server's defaults and an Idempotency-Key
claim), `start_dial`, `apply` "dialed"; then the webhooks room_started, participant_joined
(sip.callStatus dialing), track_published, track_unpublished, participant_left (sip.callStatus
hangup: answered, -> in_progress) and room_finished (-> completed), each an `apply` with its
own event id and the real `next_state` decision on the Signal `signal_from_event` would make;
then the event dispatcher's `ack_events` for the call's 3 outbox events, and one `get_call`
(a client reading it, with its timeline). That is 11 storage operations per call.

Measured: `time.process_time()` (the whole process: event loop and every thread, SQLite's own
work included) around N calls, divided by N, at concurrency 1 (sequential calls) and 20 (20
calls in flight, asyncio.gather over batches of 20). Each run uses a fresh database file in a
temp dir and starts with untimed warm-up calls; repeats are interleaved (variant order rotated)
to cancel drift. A fourth, `harness floor`, runs the same workload against a store that
answers at once from canned values: the cost of the workload itself, included in every figure.
A separate untimed pass counts SQLite statements and jobs handed to a database thread per call.

Every run is checked: every call completed with its timeline and outbox events, every event
acked, the row counts right, and the database contents (times and ids aside) identical across
the variants. Any failed check exits non-zero.

    python -m bench.storage_choice [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bench.harness import Spread, table
from common.calls.events import events_for_change, events_for_new_call
from common.calls.models import (
    Applied,
    CallEvent,
    CallRecord,
    Decide,
    IdempotencyClaim,
    NewCall,
    StoredAnswer,
    TimelineEntry,
)
from common.calls.outcomes import FINAL_STATUSES, CallState, Change, Signal, Status, next_state
from common.contracts import (
    SIP_STATUS_DIALING,
    SIP_STATUS_HANGUP,
    AgentReport,
    TranscriptTurn,
)
from common.masking import mask_phone
from common.storage.base import AdmissionLimits, DatabaseError, KeyTaken, Refusal, Refused
from common.storage.programs import (
    CHUNK,
    LIVE,
    RATE_WINDOW_S,
    SQLITE,
    Program,
    Query,
    _row_to_entry,
    dumps,
    event_data,
    row_to_call,
)
from common.storage.programs import Row as ProgramRow
from common.storage.sql import DEFAULT_LEASE_S as LEASE_S
from common.storage.sql import SqlCallStore
from common.storage.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteCallStore

T = TypeVar("T")

CONCURRENCIES = (1, 20)
CALLS_FULL, CALLS_QUICK = 2000, 300
REPEATS_FULL, REPEATS_QUICK = 3, 2
WARMUP_CALLS = 40  # untimed, per run: fills the statement caches, wakes the threads
PROBE_CALLS = 50  # the untimed counting pass
# The server's defaults (common/settings.py): CALLS_MAX_ACTIVE, CALLS_RATE_LIMIT_PER_MIN.
LIMITS = AdmissionLimits(max_live=50, per_minute=60)
CALLS_PER_CLIENT = 30  # well under the rate limit: no call is refused, as in a sane load
MAX_STATEMENTS = 10_000  # per program: a bound on the driver loop
PRAGMAS = (  # the server's (common/storage/sqlite.py): every commit synced
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)

# What one answered call leaves behind.
TIMELINE_ENTRIES = 8  # created, dialed and the 6 webhooks
OUTBOX_TYPES = ("call.dialing", "call.answered", "call.ended")
# The status each apply moves the call to (None: no change): dialed, then the 6 webhooks.
EXPECTED_CHANGES = (None, None, None, None, None, "in_progress", "completed")


class DuplicateEvent(Exception):
    """Raised inside the SQLAlchemy store's apply to roll back: the event was applied
    concurrently elsewhere."""


# ----------------------------------------------------------------------------- the workload


class BenchStore(Protocol):
    """The part of `CallStore` (common/storage/base.py) a call's life uses."""

    async def create_call(
        self,
        call: NewCall,
        detail: dict[str, Any] | None = None,
        *,
        claim: IdempotencyClaim | None = None,
        limits: AdmissionLimits | None = None,
        now: float | None = None,
    ) -> Applied: ...

    async def start_dial(self, call_id: str) -> CallRecord | None: ...

    async def apply(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, Any] | None = None,
        room_finished: bool = False,
    ) -> Applied: ...

    async def ack_events(self, event_ids: list[int], now: float) -> None: ...

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Hook:
    """One LiveKit webhook, as `CallService.handle_event` applies it."""

    kind: str
    event_id: str
    decide: Decide
    detail: dict[str, Any]
    room_finished: bool


@dataclass(frozen=True)
class CallPlan:
    """Everything one call's life sends to storage, built before the clock starts."""

    new: NewCall
    claim: IdempotencyClaim
    placed_detail: dict[str, Any]
    dialed_detail: dict[str, Any]
    hooks: tuple[Hook, ...]


@dataclass(frozen=True)
class Outcome:
    call_id: str
    changes: tuple[str | None, ...]
    event_types: tuple[str, ...]
    final: CallRecord | None


def _no_change(state: CallState) -> Change | None:
    return None  # "dialed" records the dial's details; LiveKit's webhooks move the status


def _decide(signal: Signal) -> Decide:
    def decide(state: CallState) -> Change | None:
        return next_state(state, signal)

    return decide


def _signal_detail(signal: Signal) -> dict[str, Any]:
    """As common/calls/service.py records a webhook in the timeline."""
    detail: dict[str, Any] = {}
    if signal.sip_participant:
        detail["sip_call_status"] = signal.sip_call_status
    if signal.disconnect_reason:
        detail["disconnect_reason"] = signal.disconnect_reason
    if signal.sip_status_code is not None:
        detail["sip_status"] = signal.sip_status_code
    if signal.room_outcome:
        detail["room_outcome"] = signal.room_outcome
    return detail


def _signals(room: str) -> tuple[Signal, ...]:
    """What `signal_from_event` makes of an answered call's webhooks (sandbox/rooms.py): the
    track events carry only the participant's sid and identity, so they are not SIP."""
    return (
        Signal("room_started", room),
        Signal(
            "participant_joined", room, sip_participant=True, sip_call_status=SIP_STATUS_DIALING
        ),
        Signal("track_published", room),
        Signal("track_unpublished", room),
        Signal(
            "participant_left",
            room,
            sip_participant=True,
            sip_call_status=SIP_STATUS_HANGUP,
            disconnect_reason="CLIENT_INITIATED",
        ),
        Signal("room_finished", room),
    )


INSTRUCTIONS = (
    "You are calling to confirm tomorrow's dental appointment at 10:30. Be brief, offer to "
    "reschedule if needed and answer questions about the clinic's address."
)


def plan_calls(tag: str, count: int) -> list[CallPlan]:
    clients = max(1, math.ceil(count / CALLS_PER_CLIENT))
    plans = []
    for i in range(count):
        call_id = f"call-{tag}{i:011x}"
        phone = f"+3461{i:07d}"
        client = f"client-{i % clients:03d}"
        config = {
            "caller_name": "Alice Example",
            "agent_instructions": INSTRUCTIONS,
            "tts_language": "es",
            "tts_emotion": "friendly",
            "additional_params": {"customer_tier": "Premium", "campaign_id": "SUMMER2024"},
            "ringing_timeout_s": 30,
            "max_duration_s": 600,
        }
        new = NewCall(
            call_id,
            phone,
            "Alice Example",
            "es",
            "friendly",
            ringing_timeout_s=30,
            max_duration_s=600,
            config=config,
            client=client,
        )
        digest = hashlib.sha256(f"{client}/{call_id}".encode()).hexdigest()
        hooks = tuple(
            Hook(
                kind=signal.event,
                event_id=f"EV_{call_id}_{n}",
                decide=_decide(signal),
                detail=_signal_detail(signal),
                room_finished=signal.event == "room_finished",
            )
            for n, signal in enumerate(_signals(call_id))
        )
        plans.append(
            CallPlan(
                new=new,
                claim=IdempotencyClaim(client, f"key-{call_id}", digest),
                placed_detail={"phone": mask_phone(phone)},
                dialed_detail={"dispatch_id": f"AD_{call_id}", "participant_id": f"PA_{call_id}"},
                hooks=hooks,
            )
        )
    return plans


async def one_call(store: BenchStore, plan: CallPlan) -> Outcome:
    """One call's life, as the service and the event dispatcher drive the store."""
    call_id = plan.new.call_id
    placed = await store.create_call(plan.new, plan.placed_detail, claim=plan.claim, limits=LIMITS)
    written = list(placed.events)
    await store.start_dial(call_id)
    applied = [await store.apply(call_id, "dialed", _no_change, detail=plan.dialed_detail)]
    for hook in plan.hooks:
        result = await store.apply(
            call_id,
            hook.kind,
            hook.decide,
            event_id=hook.event_id,
            detail=hook.detail,
            room_finished=hook.room_finished,
        )
        applied.append(result)
        written.extend(result.events)
    await store.ack_events([event.id for event in written], time.time())
    final = await store.get_call(call_id)
    changes = tuple(a.change.status.value if a.change else None for a in applied)
    return Outcome(call_id, changes, tuple(e.type for e in written), final)


async def run_calls(
    store: BenchStore, plans: Sequence[CallPlan], concurrency: int
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for start in range(0, len(plans), concurrency):
        batch = plans[start : start + concurrency]
        outcomes.extend(await asyncio.gather(*(one_call(store, plan) for plan in batch)))
    return outcomes


# ----------------------------------------------------------------------------- variant 2


class AiosqliteProgramStore(SqlCallStore):
    """The transaction programs over one aiosqlite connection: one thread hop per statement."""

    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.conn = conn
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection

    @classmethod
    async def open(cls, path: Path) -> AiosqliteProgramStore:
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        store = cls(conn)
        try:
            for pragma in PRAGMAS:
                await conn.execute_fetchall(pragma)
            await store._run(_migrate_program(), write=True)
        except BaseException:
            await conn.close()
            raise
        return store

    async def close(self) -> None:
        await self.conn.close()

    async def _run(self, program: Program[T], *, write: bool) -> T:
        async with self._lock:
            try:
                if not write:
                    return await self._drive(program)
                await self.conn.execute_fetchall("BEGIN IMMEDIATE")
                try:
                    result = await self._drive(program)
                except BaseException:
                    if self.conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            await self.conn.execute_fetchall("ROLLBACK")
                    raise
                await self.conn.execute_fetchall("COMMIT")
                return result
            except sqlite3.Error as exc:
                if self.conn.in_transaction:  # e.g. a failed COMMIT
                    with contextlib.suppress(sqlite3.Error):
                        await self.conn.execute_fetchall("ROLLBACK")
                raise DatabaseError(str(exc)) from exc

    async def _drive(self, program: Program[T]) -> T:
        try:
            query = next(program)
            for _ in range(MAX_STATEMENTS):
                rows = await self.conn.execute_fetchall(query.sql, query.args)
                query = program.send(cast(list[ProgramRow], rows))
        except StopIteration as done:
            result: T = done.value
            return result
        raise DatabaseError(f"a program ran more than {MAX_STATEMENTS} statements")


def _migrate_program() -> Program[None]:
    """The SQLite migrations, as `SqliteCallStore._prepare` applies them."""
    rows = yield Query("PRAGMA user_version")
    version = int(rows[0]["user_version"])
    if version > SCHEMA_VERSION:
        raise DatabaseError(f"schema version {version} is newer than this code")
    pending = [m for m in MIGRATIONS if m.version > version]
    for migration in pending:
        for statement in migration.statements:
            yield Query(statement)
    if pending:
        yield Query(f"PRAGMA user_version={SCHEMA_VERSION}")


# ----------------------------------------------------------------------------- variant 3


TABLES = ("calls", "events", "idempotency", "outbox", "reports", "readiness")


def _migrated_tables() -> sa.MetaData:
    """The Tables of the schema the server's SQLite migrations make, read back from an
    in-memory database: a hand-written copy fell behind the migrations (a call's row gained
    columns it lacked) and the variant stopped at its open."""
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as conn:
            for migration in MIGRATIONS:
                for statement in migration.statements:
                    conn.exec_driver_sql(statement)
            tables = sa.MetaData()
            tables.reflect(conn, only=TABLES)
    finally:
        engine.dispose()
    return tables


metadata = _migrated_tables()
calls_t, events_t, idempotency_t, outbox_t, reports_t, readiness_t = (
    metadata.tables[name] for name in TABLES
)

# An execution option of the read-only engine: no BEGIN, the statements run in autocommit.
AUTOCOMMIT_READS = "bench_autocommit_reads"


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver emits no BEGIN: _on_begin does
    cursor = dbapi_connection.cursor()
    try:
        for pragma in PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_begin(conn: SyncConnection) -> None:
    if not conn.get_execution_options().get(AUTOCOMMIT_READS):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _mapping(row: sa.Row[Any]) -> ProgramRow:
    return cast(ProgramRow, row._mapping)


class CoreCallStore:
    """The operations a call uses, written with SQLAlchemy Core over aiosqlite."""

    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._reads = engine.execution_options(**{AUTOCOMMIT_READS: True})
        self._clock = clock

    @classmethod
    async def open(cls, path: Path) -> CoreCallStore:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}", pool_size=1, max_overflow=0)
        sa.event.listen(engine.sync_engine, "connect", _on_connect)
        sa.event.listen(engine.sync_engine, "begin", _on_begin)
        store = cls(engine)
        try:
            await store._migrate()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def _migrate(self) -> None:
        async with self._transaction() as conn:  # BEGIN IMMEDIATE: one process migrates
            version = int((await conn.exec_driver_sql("PRAGMA user_version")).scalar_one())
            if version > SCHEMA_VERSION:
                raise DatabaseError(f"schema version {version} is newer than this code")
            pending = [m for m in MIGRATIONS if m.version > version]
            for migration in pending:
                for statement in migration.statements:
                    await conn.exec_driver_sql(statement)
            if pending:
                await conn.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")
            for name, tbl in metadata.tables.items():  # the Tables mirror the migrated schema
                info = await conn.exec_driver_sql(f"PRAGMA table_info({name})")
                columns = [str(column) for column in info.scalars(1)]
                if columns != [c.name for c in tbl.columns]:
                    raise RuntimeError(f"Table {name} {list(tbl.columns.keys())} != {columns}")

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.begin() as conn:
                yield conn
        except DBAPIError as exc:
            raise DatabaseError(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._reads.connect() as conn:
                yield conn
        except DBAPIError as exc:
            raise DatabaseError(str(exc)) from exc

    # -- calls ---------------------------------------------------------------------------

    async def create_call(
        self,
        call: NewCall,
        detail: dict[str, Any] | None = None,
        *,
        claim: IdempotencyClaim | None = None,
        limits: AdmissionLimits | None = None,
        now: float | None = None,
    ) -> Applied:
        at = self._clock() if now is None else now
        async with self._transaction() as conn:
            if claim is not None:  # first: a retry of a placed call is never refused
                await self._bind_key(conn, claim, call.call_id, at)
            if limits is not None:
                refusal = await self._admission_refusal(conn, call.client, limits, at)
                if refusal is not None:
                    raise Refused(refusal)
            inserted = await conn.execute(
                sa.insert(calls_t)
                .values(
                    call_id=call.call_id,
                    phone_number=call.phone_number,
                    caller_name=call.caller_name,
                    language=call.language,
                    emotion=call.emotion,
                    status=Status.DIALING.value,
                    created_at=at,
                    updated_at=at,
                    ringing_timeout_s=call.ringing_timeout_s,
                    max_duration_s=call.max_duration_s,
                    config=dumps(call.config),
                    client=call.client,
                )
                .returning(calls_t)
            )
            after = row_to_call(_mapping(inserted.one()))
            await conn.execute(
                sa.insert(events_t).values(
                    call_id=call.call_id,
                    event_id=None,
                    kind="created",
                    from_status=None,
                    to_status=Status.DIALING.value,
                    detail=dumps(detail or {}),
                    at=at,
                )
            )
            written = await self._add_events(conn, events_for_new_call(after), None, after, at)
        return Applied(after=after, events=written)

    async def _bind_key(
        self, conn: AsyncConnection, claim: IdempotencyClaim, call_id: str, now: float
    ) -> None:
        for _ in range(2):  # a key freed between our insert and our read is bound on the retry
            taken = await conn.execute(
                sqlite_insert(idempotency_t)
                .values(
                    client=claim.client,
                    key=claim.key,
                    request_hash=claim.request_hash,
                    call_id=call_id,
                    created_at=now,
                )
                .on_conflict_do_nothing()
                .returning(idempotency_t.c.call_id)
            )
            if taken.first() is not None:
                return
            stored = await self._get_idempotent(conn, claim.client, claim.key)
            if stored is not None:
                raise KeyTaken(stored)
        raise DatabaseError("the Idempotency-Key changed hands twice while binding it; retry")

    async def _get_idempotent(
        self, conn: AsyncConnection, client: str, key: str
    ) -> StoredAnswer | None:
        t = idempotency_t
        found = await conn.execute(
            sa.select(t.c.call_id, t.c.request_hash, t.c.status, t.c.body).where(
                t.c.client == client, t.c.key == key
            )
        )
        row = found.first()
        if row is None:
            return None
        body = json.loads(row.body) if row.body is not None else None
        return StoredAnswer(str(row.call_id), str(row.request_hash), row.status, body)

    async def _admission_refusal(
        self, conn: AsyncConnection, client: str, limits: AdmissionLimits, now: float
    ) -> Refusal | None:
        c = calls_t.c
        live = await conn.execute(
            sa.select(sa.func.count()).select_from(calls_t).where(c.status.in_(LIVE))
        )
        if int(live.scalar_one()) >= limits.max_live:
            return Refusal("live", 5)
        window_start = now - RATE_WINDOW_S
        rate = await conn.execute(
            sa.select(sa.func.count().label("n"), sa.func.min(c.created_at).label("oldest")).where(
                c.client == client, c.created_at > window_start, c.counts_for_rate == 1
            )
        )
        row = rate.one()
        if int(row.n) >= limits.per_minute:
            return Refusal("rate", max(1, math.ceil(float(row.oldest) + RATE_WINDOW_S - now)))
        return None

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None:
        async with self._reading() as conn:
            found = await conn.execute(sa.select(calls_t).where(calls_t.c.call_id == call_id))
            row = found.first()
            if row is None:
                return None
            timeline: tuple[TimelineEntry, ...] = ()
            turns: tuple[TranscriptTurn, ...] = ()
            if with_timeline:
                entries = await conn.execute(
                    sa.select(events_t).where(events_t.c.call_id == call_id).order_by(events_t.c.id)
                )
                timeline = tuple(_row_to_entry(_mapping(e)) for e in entries)
                if row.report is None:  # before the final report: the turns reported so far
                    reported = await conn.execute(
                        sa.select(reports_t.c.body)
                        .where(reports_t.c.call_id == call_id, reports_t.c.kind == "turn")
                        .order_by(reports_t.c.seq)
                    )
                    parsed = (
                        AgentReport.model_validate_json(body).turn for body in reported.scalars()
                    )
                    turns = tuple(turn for turn in parsed if turn is not None)
            return row_to_call(_mapping(row), timeline, turns)

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
        now = self._clock()
        try:
            async with self._transaction() as conn:
                return await self._apply(
                    conn, call_id, kind, decide, event_id, detail or {}, room_finished, now
                )
        except DuplicateEvent:  # applied by another server at the same moment
            return Applied(duplicate=True)

    async def _apply(
        self,
        conn: AsyncConnection,
        call_id: str,
        kind: str,
        decide: Decide,
        event_id: str | None,
        detail: dict[str, Any],
        room_finished: bool,
        now: float,
    ) -> Applied:
        c = calls_t.c
        if event_id is not None:
            seen = await conn.execute(
                sa.select(sa.literal_column("1", sa.Integer).label("seen")).where(
                    events_t.c.event_id == event_id
                )
            )
            if seen.first() is not None:
                return Applied(duplicate=True)
        if room_finished:
            await conn.execute(
                sa.update(calls_t)
                .where(c.call_id == call_id)
                .values(room_finished_at=sa.func.coalesce(c.room_finished_at, now))
            )
        found = await conn.execute(sa.select(calls_t).where(c.call_id == call_id))
        row = found.first()
        if row is None:
            return Applied(unknown_call=True)
        before = row_to_call(_mapping(row))
        change = decide(before.state)
        after = before
        written: tuple[CallEvent, ...] = ()
        if change is not None:
            values: dict[str, Any] = {"status": change.status.value, "updated_at": now}
            if change.reason is not None:
                values["reason"] = change.reason
            if change.status in FINAL_STATUSES:
                values["outcome"] = change.status.value
                values["ended_at"] = now
            if change.answered:
                values["answered"] = 1
                values["answered_at"] = sa.func.coalesce(c.answered_at, now)
            updated = await conn.execute(
                sa.update(calls_t).where(c.call_id == call_id).values(values).returning(calls_t)
            )
            after = row_to_call(_mapping(updated.one()))
            written = await self._add_events(
                conn, events_for_change(before, after), before.status, after, now
            )
        entry = {
            "call_id": call_id,
            "event_id": event_id,
            "kind": kind,
            "from_status": before.status.value if change else None,
            "to_status": change.status.value if change else None,
            "detail": dumps(detail),
            "at": now,
        }
        if event_id is not None:
            inserted = await conn.execute(
                sqlite_insert(events_t)
                .values(entry)
                .on_conflict_do_nothing()
                .returning(events_t.c.id)
            )
            if inserted.first() is None:
                raise DuplicateEvent
        else:
            await conn.execute(sa.insert(events_t).values(entry))
        return Applied(change=change, before=before, after=after, events=written)

    async def _add_events(
        self,
        conn: AsyncConnection,
        types: Sequence[str],
        from_status: Status | None,
        after: CallRecord,
        now: float,
    ) -> tuple[CallEvent, ...]:
        if not types:
            return ()
        data = event_data(after)
        encoded = dumps(data)
        previous = from_status.value if from_status else None
        written = []
        for event_type in types:
            inserted = await conn.execute(
                sa.insert(outbox_t)
                .values(
                    call_id=after.call_id,
                    type=event_type,
                    from_status=previous,
                    data=encoded,
                    created_at=now,
                    claimed_until=now + LEASE_S,
                )
                .returning(outbox_t.c.id)
            )
            new_id = int(inserted.scalar_one())
            written.append(CallEvent(new_id, after.call_id, event_type, data, now, previous))
        return tuple(written)

    async def start_dial(self, call_id: str) -> CallRecord | None:
        now = self._clock()
        async with self._transaction() as conn:
            updated = await conn.execute(
                sa.update(calls_t)
                .where(calls_t.c.call_id == call_id)
                .values(dial_started_at=now)
                .returning(calls_t)
            )
            row = updated.first()
        return row_to_call(_mapping(row)) if row is not None else None

    async def ack_events(self, event_ids: list[int], now: float) -> None:
        async with self._transaction() as conn:
            for start in range(0, len(event_ids), CHUNK):
                chunk = event_ids[start : start + CHUNK]
                await conn.execute(
                    sa.update(outbox_t).where(outbox_t.c.id.in_(chunk)).values(dispatched_at=now)
                )


# ----------------------------------------------------------------------------- the floor


class NullStore:
    """The workload's own cost: every operation answers at once from canned values."""

    def __init__(self) -> None:
        now = time.time()
        self._record = CallRecord(
            call_id="call-null",
            phone_number="+34610000000",
            caller_name="Alice Example",
            language="es",
            emotion="friendly",
            status=Status.DIALING,
            outcome=None,
            reason=None,
            answered=False,
            hangup_requested=False,
            created_at=now,
            answered_at=None,
            ended_at=None,
            updated_at=now,
        )
        self._event = CallEvent(1, "call-null", "call.dialing", {}, now)

    async def create_call(
        self,
        call: NewCall,
        detail: dict[str, Any] | None = None,
        *,
        claim: IdempotencyClaim | None = None,
        limits: AdmissionLimits | None = None,
        now: float | None = None,
    ) -> Applied:
        return Applied(after=self._record, events=(self._event,))

    async def start_dial(self, call_id: str) -> CallRecord | None:
        return self._record

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
        change = decide(self._record.state)
        return Applied(change=change, before=self._record, after=self._record)

    async def ack_events(self, event_ids: list[int], now: float) -> None:
        return None

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None:
        return self._record

    async def close(self) -> None:
        return None


# ----------------------------------------------------------------------------- variants


async def _open_thread(path: Path) -> BenchStore:
    return await SqliteCallStore.open(path)


async def _open_aiosqlite(path: Path) -> BenchStore:
    return await AiosqliteProgramStore.open(path)


async def _open_core(path: Path) -> BenchStore:
    return await CoreCallStore.open(path)


async def _open_null(path: Path) -> BenchStore:
    return NullStore()


@dataclass(frozen=True)
class Variant:
    name: str
    open: Callable[[Path], Awaitable[BenchStore]]
    has_database: bool = True


VARIANTS = (
    Variant("programs+thread", _open_thread),
    Variant("programs+aiosqlite", _open_aiosqlite),
    Variant("sqlalchemy-core+aiosqlite", _open_core),
)
FLOOR = Variant("harness floor (no storage)", _open_null, has_database=False)
BASELINE = VARIANTS[0].name


# ----------------------------------------------------------------------------- checks


def check_outcomes(outcomes: Sequence[Outcome]) -> list[str]:
    problems = []
    for o in outcomes:
        if o.changes != EXPECTED_CHANGES:
            problems.append(f"{o.call_id}: changes {o.changes}, expected {EXPECTED_CHANGES}")
        if o.event_types != OUTBOX_TYPES:
            problems.append(f"{o.call_id}: outbox events {o.event_types}")
        if o.final is None:
            problems.append(f"{o.call_id}: get_call found nothing")
        elif o.final.status is not Status.COMPLETED or not o.final.answered:
            problems.append(f"{o.call_id}: read back as {o.final.status}")
        elif len(o.final.timeline) != TIMELINE_ENTRIES:
            problems.append(f"{o.call_id}: timeline of {len(o.final.timeline)} entries")
    return problems[:5]


def _normal_data(text: str) -> str:
    data = json.loads(text)
    kept = {
        k: v for k, v in data.items() if not k.endswith("_at") and k not in ("ring_s", "talk_s")
    }
    return dumps(kept)


def check_database(path: Path, calls: int) -> tuple[list[str], str]:
    """Row counts and states, and a digest of the contents without times and ids."""
    problems = []
    with contextlib.closing(sqlite3.connect(path)) as db:

        def one(sql: str) -> Any:
            return db.execute(sql).fetchone()[0]

        by_status = dict(db.execute("SELECT status, COUNT(*) FROM calls GROUP BY status"))
        if by_status != {"completed": calls}:
            problems.append(f"calls by status {by_status}, expected {{'completed': {calls}}}")
        unsettled = one(
            "SELECT COUNT(*) FROM calls WHERE answered != 1 OR answered_at IS NULL"
            " OR ended_at IS NULL OR dial_started_at IS NULL OR room_finished_at IS NULL"
            " OR outcome IS NOT 'completed'"
        )
        if unsettled:
            problems.append(f"{unsettled} call rows not answered/ended/dialled/finished")
        expected = {
            "events": calls * TIMELINE_ENTRIES,
            "outbox": calls * len(OUTBOX_TYPES),
            "idempotency": calls,
        }
        for name, count in expected.items():
            found = one(f"SELECT COUNT(*) FROM {name}")  # noqa: S608 - our table names
            if found != count:
                problems.append(f"{found} {name} rows, expected {count}")
        pending = one("SELECT COUNT(*) FROM outbox WHERE dispatched_at IS NULL")
        if pending:
            problems.append(f"{pending} outbox events not acked")
        digest = hashlib.sha256()
        for row in db.execute(
            "SELECT call_id, phone_number, caller_name, language, emotion, status, outcome,"
            " reason, answered, hangup_requested, ringing_timeout_s, max_duration_s, config,"
            " client, counts_for_rate FROM calls ORDER BY call_id"
        ):
            digest.update(repr(row).encode())
        for row in db.execute(
            "SELECT call_id, event_id, kind, from_status, to_status, detail FROM events"
            " ORDER BY call_id, id"
        ):
            digest.update(repr(row).encode())
        for call_id, type_, from_status, data in db.execute(
            "SELECT call_id, type, from_status, data FROM outbox ORDER BY call_id, id"
        ):
            digest.update(repr((call_id, type_, from_status, _normal_data(data))).encode())
        for row in db.execute(
            "SELECT client, key, request_hash, call_id, status, body FROM idempotency"
            " ORDER BY client, key"
        ):
            digest.update(repr(row).encode())
    return problems, digest.hexdigest()


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class RunResult:
    variant: str
    concurrency: int
    cpu_us_per_call: float
    loop_us_per_call: float  # of which the event loop's thread
    calls_per_s: float
    problems: list[str]
    digest: str | None


async def measure(
    variant: Variant, warmup: Sequence[CallPlan], plans: Sequence[CallPlan], concurrency: int
) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        path = Path(tmp) / "calls.db"
        store = await variant.open(path)
        try:
            done = await run_calls(store, warmup, concurrency)
            gc.collect()
            cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
            timed = await run_calls(store, plans, concurrency)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            loop = time.thread_time() - loop0
        finally:
            await store.close()
        problems: list[str] = []
        digest = None
        if variant.has_database:
            problems = check_outcomes([*done, *timed])
            db_problems, digest = check_database(path, len(warmup) + len(plans))
            problems.extend(db_problems)
    return RunResult(
        variant.name,
        concurrency,
        cpu / len(plans) * 1e6,
        loop / len(plans) * 1e6,
        len(plans) / wall if wall > 0 else math.nan,
        problems,
        digest,
    )


@dataclass
class Counts:
    statements: int = 0
    hops: int = 0

    def statement(self, _sql: str) -> None:
        self.statements += 1


class _CountingSqliteStore(SqliteCallStore):
    """The real store, counting the jobs it hands to its database thread (probe only)."""

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, instance: str = ""
    ) -> None:
        super().__init__(path, clock, instance)
        self.counts = Counts()

    async def _submit(self, fn: Callable[..., T], *args: Any, together: bool = False) -> T:
        self.counts.hops += 1
        return await super()._submit(fn, *args, together=together)


@contextlib.contextmanager
def _counting_aiosqlite_hops(counts: Counts) -> Iterator[None]:
    """Every job aiosqlite hands to its connection's thread goes through `_execute`."""
    original = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        counts.hops += 1
        return await original(self, fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
    try:
        yield
    finally:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]


async def probe(variant: Variant) -> Counts:
    """SQLite statements and database-thread jobs per call, on a short untimed run."""
    counts = Counts()
    warmup, plans = plan_calls("p", WARMUP_CALLS), plan_calls("q", PROBE_CALLS)
    with tempfile.TemporaryDirectory(prefix="bench-storage-probe-") as tmp:
        path = Path(tmp) / "calls.db"
        store: BenchStore
        if variant.name == "programs+thread":
            store = await _CountingSqliteStore.open(path)
        else:
            store = await variant.open(path)
        try:
            await run_calls(store, warmup, 1)
            if isinstance(store, _CountingSqliteStore):
                store.conn.set_trace_callback(counts.statement)
                store.counts = counts
                await run_calls(store, plans, 1)
            elif isinstance(store, AiosqliteProgramStore):
                await store.conn.set_trace_callback(counts.statement)
                with _counting_aiosqlite_hops(counts):
                    await run_calls(store, plans, 1)
            elif isinstance(store, CoreCallStore):
                async with store.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver = raw.driver_connection
                    assert isinstance(driver, aiosqlite.Connection)
                    await driver.set_trace_callback(counts.statement)
                with _counting_aiosqlite_hops(counts):
                    await run_calls(store, plans, 1)
        finally:
            await store.close()
    return Counts(round(counts.statements / PROBE_CALLS), round(counts.hops / PROBE_CALLS))


# ----------------------------------------------------------------------------- report


def _fmt(value: float, spec: str = ".0f") -> str:
    return "n/a" if math.isnan(value) else f"{value:{spec}}"


def report(
    results: Sequence[RunResult],
    counts: dict[str, Counts],
    calls: int,
    repeats: int,
    quick: bool,
) -> str:
    lines = [
        "## Storage CPU per placed and settled call: transaction programs vs SQLAlchemy Core",
        "",
        "Measured: the CPU the process spends in storage per placed and settled call:"
        " `time.process_time()` (event loop + every thread, SQLite's own work included) around"
        ' N calls, / N. "Of which loop thread": `time.thread_time()` of the event loop\'s'
        " thread (the rest ran on database threads).",
        "",
        "One call = 11 storage operations: `create_call` (Idempotency-Key claim + admission"
        " limits), `start_dial`, 7 x `apply` (dialed + 6 webhooks, 2 of which change the"
        " status), `ack_events` (its 3 outbox events), `get_call` (with its 8-entry timeline)."
        f" Fresh database file per run, {WARMUP_CALLS} untimed warm-up calls, then {calls}"
        f" timed calls; {repeats} interleaved repeats ({'--quick' if quick else 'full'}),"
        " median and min..max over them. The floor row is the same workload against a store"
        " that answers at once from canned values (included in every other row).",
        "",
        f"Machine: {len(os.sched_getaffinity(0))} cores (nproc), Python"
        f" {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, SQLAlchemy"
        f" {sa.__version__}, aiosqlite {aiosqlite.__version__};"
        f" {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    for concurrency in CONCURRENCIES:
        rows = []
        base = Spread.of(
            [
                r.cpu_us_per_call
                for r in results
                if r.variant == BASELINE and r.concurrency == concurrency
            ]
        )
        for variant in (*VARIANTS, FLOOR):
            mine = [
                r for r in results if r.variant == variant.name and r.concurrency == concurrency
            ]
            cpu = Spread.of([r.cpu_us_per_call for r in mine])
            loop = Spread.of([r.loop_us_per_call for r in mine])
            rate = Spread.of([r.calls_per_s for r in mine])
            count = counts.get(variant.name)
            rows.append(
                [
                    variant.name,
                    _fmt(cpu.mid),
                    f"{_fmt(cpu.low)}..{_fmt(cpu.high)}",
                    f"{cpu.mid / base.mid:.2f}x" if variant.has_database else "-",
                    _fmt(loop.mid),
                    _fmt(rate.mid),
                    str(count.statements) if count else "-",
                    str(count.hops) if count else "-",
                ]
            )
        title = "sequential calls" if concurrency == 1 else f"{concurrency} calls in flight"
        lines += [
            f"### Concurrency {concurrency} ({title})",
            "",
            table(
                [
                    "variant",
                    "CPU µs/call (median)",
                    "min..max",
                    f"CPU vs {BASELINE}",
                    "of which loop thread µs",
                    "wall calls/s (median)",
                    "SQLite statements/call",
                    "thread jobs/call",
                ],
                rows,
            ),
            "",
        ]
    lines.append(
        "Statements (BEGIN/COMMIT included) and jobs handed to a database thread are counted"
        f" in a separate untimed pass of {PROBE_CALLS} sequential calls."
    )
    return "\n".join(lines)


async def main_async(quick: bool) -> int:
    calls = CALLS_QUICK if quick else CALLS_FULL
    repeats = REPEATS_QUICK if quick else REPEATS_FULL
    results: list[RunResult] = []
    counts: dict[str, Counts] = {}
    for variant in VARIANTS:
        counts[variant.name] = await probe(variant)
    order = [*VARIANTS, FLOOR]
    for repeat in range(repeats):
        for concurrency in CONCURRENCIES:
            warmup = plan_calls("w", WARMUP_CALLS)
            plans = plan_calls("t", calls)
            shift = (repeat + concurrency) % len(order)  # rotate which variant runs first
            for variant in order[shift:] + order[:shift]:
                result = await measure(variant, warmup, plans, concurrency)
                print(
                    f"  [{time.strftime('%H:%M:%S')}] repeat {repeat + 1}/{repeats} c={concurrency}"
                    f" {variant.name}: {result.cpu_us_per_call:.0f} µs/call,"
                    f" {result.calls_per_s:.0f} calls/s",
                    file=sys.stderr,
                    flush=True,
                )
                results.append(result)
    failures = [f"{r.variant} c={r.concurrency}: {p}" for r in results for p in r.problems]
    for concurrency in CONCURRENCIES:
        digests = {
            r.variant: r.digest
            for r in results
            if r.concurrency == concurrency and r.digest is not None
        }
        if len(set(digests.values())) != 1:
            failures.append(f"c={concurrency}: database contents differ: {digests}")
        per_run = [r.digest for r in results if r.concurrency == concurrency and r.digest]
        if len(set(per_run)) != 1:
            failures.append(f"c={concurrency}: database contents differ between runs")
    print(report(results, counts, calls, repeats, quick))
    print()
    if failures:
        print("Checks FAILED:")
        for failure in failures[:20]:
            print(f"- {failure}")
        return 1
    print(
        "Checks: every call completed (8 timeline entries, 3 outbox events, all acked), row"
        " counts right, and the database contents (times and ids aside) identical across"
        " variants and runs: OK."
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    args = parser.parse_args()
    sys.exit(asyncio.run(main_async(args.quick)))


if __name__ == "__main__":
    main()
