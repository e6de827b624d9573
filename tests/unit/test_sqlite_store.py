"""The SQLite backend's own behaviour: its file, schema migrations, and its batching worker.

(What every backend does is the contract suite, tests/contract/.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from common.calls.models import CallRecord, NewCall, StoredAnswer
from common.calls.outcomes import CallState, Change, Status
from common.storage import campaign_programs, programs
from common.storage.base import AdmissionLimits, DatabaseError
from common.storage.migrations import migrations_for, split_statements
from common.storage.sqlite import SCHEMA_VERSION, SqliteCallStore, _enter_wal


def new_call(n: int) -> NewCall:
    return NewCall(f"call-{n:012d}", "+1234567890", f"Caller {n}", "en", "Calm")


def raw_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the file with a separate connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


async def test_open_creates_the_file_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "data" / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    assert path.is_file()  # the missing parent directory was created
    assert raw_rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == migrations_for("sqlite")[-1].version == 25
    assert len(migrations_for("sqlite")) == 25
    tables = {r[0] for r in raw_rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "calls",
        "events",
        "idempotency",
        "readiness",
        "outbox",
        "reports",
        "deliveries",
        "rate_buckets",
    } <= tables
    assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_a_new_database_and_its_wal_are_their_owners_alone(tmp_path: Path) -> None:
    """calls.db holds numbers, transcripts and summaries: it (and its -wal and -shm) were
    created 0644. An existing file keeps its own permissions."""
    import stat

    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    try:
        await store.create_call(NewCall("call-00000000mode", "+14155550100", "A", "en", "Calm"))
        for name in ("calls.db", "calls.db-wal", "calls.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        await store.close()
    path.chmod(0o640)
    await (await SqliteCallStore.open(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


async def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"this is not an SQLite database, just text\n" * 200)
    with pytest.raises(DatabaseError, match="not a database"):
        await SqliteCallStore.open(path)
    assert path.read_bytes().startswith(b"this is not")  # left as it was


@pytest.mark.parametrize("name", ["a directory", "a device", ":memory:"])
async def test_a_path_that_is_no_database_file_is_one_database_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """Whoever opens says why, once, naming its setting: SQLite's own words were an ERROR
    line first ("unable to open database file", "disk I/O error"), and `:memory:` an OSError
    (`[Errno 2] No such file or directory: ':memory:'`) that named nothing."""
    path = {"a directory": tmp_path, "a device": Path("/dev/null")}.get(name, Path(name))
    with pytest.raises(DatabaseError) as info:
        await SqliteCallStore.open(path)
    if name != ":memory:":
        assert str(info.value) == "not a regular file (a directory, a device, a FIFO or a socket)"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this code"
    ):
        await SqliteCallStore.open(path)


async def test_two_stores_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    # Four at once, 60 times: switching a new file to WAL refused ~4% of such rounds with
    # "database is locked" before the switch was retried, so this failed nearly every run.
    for n in range(60):
        path = tmp_path / f"calls-{n}.db"
        stores = await asyncio.gather(*(SqliteCallStore.open(path) for _ in range(4)))
        for store in stores:
            await store.close()
        assert raw_rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert raw_rows(path, "PRAGMA journal_mode") == [("wal",)]


def test_the_switch_to_wal_gives_up_on_a_lock_that_stays(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (a)")
    holder.execute("BEGIN EXCLUSIVE")
    conn = sqlite3.connect(path, timeout=0)
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _enter_wal(conn, timeout_s=0.3)
    assert 0.2 <= time.monotonic() - started < 5
    holder.execute("COMMIT")
    _enter_wal(conn, timeout_s=0.3)  # free again: switched
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    holder.close()


def test_migration_files_split_into_statements() -> None:
    assert split_statements("-- a comment; with a semicolon\nCREATE TABLE t (a);\n\nSELECT 1;") == (
        "CREATE TABLE t (a)",
        "SELECT 1",
    )
    for backend in ("sqlite", "postgres"):
        migrations = migrations_for(backend)
        versions = [m.version for m in migrations]
        assert versions == sorted(set(versions)) and versions[0] == 1  # a gap is allowed
        assert all(m.statements for m in migrations)


# Schema version 1 as the first release of this service created it.
V1_SCHEMA = """
CREATE TABLE calls (call_id TEXT PRIMARY KEY, phone_number TEXT NOT NULL,
    caller_name TEXT NOT NULL, language TEXT NOT NULL, emotion TEXT NOT NULL,
    status TEXT NOT NULL, outcome TEXT, reason TEXT,
    answered INTEGER NOT NULL DEFAULT 0, hangup_requested INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, answered_at REAL, ended_at REAL, updated_at REAL NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL REFERENCES calls (call_id), event_id TEXT, kind TEXT NOT NULL,
    from_status TEXT, to_status TEXT, detail TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE idempotency (client TEXT NOT NULL, key TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (client, key));
"""


async def test_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    """A calls.db made by schema version 1 keeps its rows and reaches the current version."""
    path = tmp_path / "calls.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.executescript(
        "INSERT INTO calls (call_id, phone_number, caller_name, language, emotion, status,"
        " created_at, updated_at) VALUES ('call-1', '+1234567890', 'A', 'en', 'Calm',"
        " 'completed', 1.0, 2.0);"
        "INSERT INTO idempotency VALUES ('alice', 'k1', 200, '{\"call_id\": \"call-1\"}', 1.0);"
        "PRAGMA user_version = 1;"
    )
    conn.close()
    db = await SqliteCallStore.open(path)
    try:
        assert await db.get_idempotent("alice", "k1") == StoredAnswer(
            "call-1", "", 200, {"call_id": "call-1"}
        )
        call = await db.get_call("call-1")
        assert call is not None and call.status is Status.COMPLETED
        assert call.config is None and call.max_duration_s is None
    finally:
        await db.close()
    assert raw_rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_calls_of_the_last_minute_count_for_the_rate_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """Migration 8 counts the calls placed in the minute before it into the rate buckets."""
    path = tmp_path / "calls.db"
    db = await SqliteCallStore.open(path)
    try:
        await db.create_call(new_call(1))
    finally:
        await db.close()
    conn = sqlite3.connect(path)  # back to schema version 7, as before the upgrade
    conn.executescript(
        "DROP TABLE rate_buckets; CREATE INDEX calls_client_created ON calls (client, created_at);"
        "DROP INDEX idempotency_call; ALTER TABLE calls DROP COLUMN callee_left_at;"
        "ALTER TABLE calls DROP COLUMN sandbox_instance;"
        "ALTER TABLE deliveries DROP COLUMN round_start;"
        "ALTER TABLE calls DROP COLUMN deliveries_held;"
        "ALTER TABLE calls DROP COLUMN no_report;"
        "ALTER TABLE calls DROP COLUMN placed_by; ALTER TABLE calls DROP COLUMN placed_run;"
        "DROP INDEX deliveries_due_heads; DROP INDEX deliveries_claimed;"
        "ALTER TABLE deliveries DROP COLUMN behind;"
        "ALTER TABLE outbox DROP COLUMN takeovers; ALTER TABLE outbox DROP COLUMN given_up_at;"
        "PRAGMA user_version = 7;"
    )
    conn.close()
    db = await SqliteCallStore.open(path)
    try:
        limits = AdmissionLimits(max_live=100, per_minute=1)
        refusal = await db.admission_refusal("", limits, time.time())
        assert refusal is not None and refusal.limit == "rate"
    finally:
        await db.close()
    assert raw_rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


# ------------------------------------------------------------------ the worker's batches


async def test_concurrent_calls_each_get_their_own_answer(tmp_path: Path) -> None:
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await asyncio.gather(*(db.create_call(new_call(n)) for n in range(60)))
        calls = await asyncio.gather(*(db.get_call(f"call-{n:012d}") for n in range(60)))
        assert [c.caller_name if c else None for c in calls] == [f"Caller {n}" for n in range(60)]
        assert await db.count_live() == 60
    finally:
        await db.close()


async def test_a_failing_call_in_a_batch_fails_alone(tmp_path: Path) -> None:
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await db.create_call(new_call(1))

        def boom(_state: CallState) -> Change:
            raise ValueError("no decision")

        results = await asyncio.gather(
            db.apply("call-000000000001", "a", lambda _s: Change(Status.RINGING), event_id="e1"),
            db.apply("call-000000000001", "b", boom, event_id="e2"),
            db.create_call(new_call(1)),  # duplicate key: a sqlite error
            db.apply("call-000000000001", "c", lambda _s: None, event_id="e3"),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException) and results[0].change is not None
        assert isinstance(results[1], ValueError)
        assert isinstance(results[2], DatabaseError)
        assert not isinstance(results[3], BaseException) and results[3].change is None
        call = await db.get_call("call-000000000001")
        assert call is not None and call.status is Status.RINGING
        assert [e.kind for e in call.timeline] == ["created", "a", "c"]
    finally:
        await db.close()


async def test_a_batchs_first_write_has_no_savepoint_and_its_last_no_release(
    tmp_path: Path,
) -> None:
    """Writes queued together run in one transaction, each but the first in a savepoint
    (nothing comes before the first: it is rolled back with the transaction, which begins
    again), and the last one's savepoint is released by the COMMIT. A batch of three ran
    three SAVEPOINTs and three RELEASEs. The first one failing after it wrote is still
    rolled back alone."""
    path = tmp_path / "calls.db"
    db = await SqliteCallStore.open(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await db.create_call(new_call(1))

        def boom(_state: CallState) -> Change:
            raise ValueError("no decision")

        statements: list[str] = []
        db.conn.set_trace_callback(statements.append)
        other.execute("BEGIN IMMEDIATE")  # another process's write: the store's waits for it
        waiting = asyncio.ensure_future(db.create_call(new_call(0)))
        while db._worker.unfinished() != 1 or db._worker._queue:  # taken, waiting for the lock
            await asyncio.sleep(0.01)
        batch = asyncio.gather(
            # its line and the room's mark written, then its decision fails
            db.apply("call-000000000001", "x", boom, event_id="e1", room_finished=True),
            db.create_call(new_call(2)),
            db.apply("call-000000000001", "c", lambda _s: Change(Status.RINGING), event_id="e3"),
            return_exceptions=True,
        )
        while db._worker.unfinished() != 4:  # the three queued behind the first
            await asyncio.sleep(0.01)
        other.execute("ROLLBACK")
        await waiting
        results = await batch
        db.conn.set_trace_callback(None)
        assert isinstance(results[0], ValueError)
        assert not isinstance(results[2], BaseException) and results[2].change is not None
        assert statements.count("SAVEPOINT program") == 2  # was 3
        assert statements.count("RELEASE program") == 1  # was 3
        call = await db.get_call("call-000000000001")
        assert call is not None and call.status is Status.RINGING
        assert call.room_finished_at is None
        assert [e.kind for e in call.timeline] == ["created", "c"]
        assert await db.get_call("call-000000000002") is not None
    finally:
        other.close()
        await db.close()


class Watched:
    """The store's connection, counting COMMITs; `fail(sql)` picks statements that fail."""

    def __init__(self, conn: sqlite3.Connection, fail: Any = None, lose: bool = False) -> None:
        self._conn = conn
        self._fail = fail
        self._lose = lose  # a failing statement first rolls the transaction back, as SQLite may
        self.commits = 0

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if self._fail is not None and self._fail(sql, params):
            self._fail = None
            if self._lose:
                self._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        self.commits += sql == "COMMIT"
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def watched(path: Path, **options: Any) -> tuple[SqliteCallStore, Watched]:
    db = await SqliteCallStore.open(path)
    watch = Watched(db.conn, **options)
    db._conn = watch  # type: ignore[assignment]
    return db, watch


async def test_writes_queued_together_share_one_commit(tmp_path: Path) -> None:
    db, watch = await watched(tmp_path / "calls.db")
    try:
        await asyncio.gather(*(db.create_call(new_call(n)) for n in range(40)))
        assert await db.count_live() == 40
        assert watch.commits < 40  # the calls queued while the thread was busy went together
    finally:
        await db.close()


async def test_a_failed_commit_fails_every_write_that_shared_it(tmp_path: Path) -> None:
    db, _ = await watched(tmp_path / "calls.db", fail=lambda sql, _a: sql == "COMMIT")
    try:
        results = await asyncio.gather(
            *(db.create_call(new_call(n)) for n in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, DatabaseError) for r in results)
        assert await db.count_live() == 0  # none was written
        await db.create_call(new_call(9))  # and the next write works
    finally:
        await db.close()


async def test_writes_after_one_that_lost_the_transaction_are_written(tmp_path: Path) -> None:
    """SQLite may roll a whole transaction back on an error (disk full): the writes before
    the failing one fail with it (they were not written), the ones after it are run anew."""

    def third_insert(sql: str, args: tuple[Any, ...]) -> bool:
        return sql.startswith("INSERT INTO calls") and args[0] == "call-000000000002"

    db, _ = await watched(tmp_path / "calls.db", fail=third_insert, lose=True)
    try:
        results = await asyncio.gather(
            *(db.create_call(new_call(n)) for n in range(5)), return_exceptions=True
        )
        failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
        assert 2 in failed and all(isinstance(results[n], DatabaseError) for n in failed)
        assert failed == list(range(failed[0], 3))  # those it was grouped with, up to it
        assert await db.count_live() == 5 - len(failed)
        for n in range(5):
            assert (await db.get_call(f"call-{n:012d}") is None) == (n in failed)
    finally:
        await db.close()


async def test_a_cancelled_caller_leaves_the_others_alone(tmp_path: Path) -> None:
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        first = asyncio.ensure_future(db.create_call(new_call(1)))
        second = asyncio.ensure_future(db.create_call(new_call(2)))
        await asyncio.sleep(0)
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await db.get_call("call-000000000002") is not None
        assert await db.count_live() in (1, 2)  # the cancelled insert may have run already
    finally:
        await db.close()
    with pytest.raises(DatabaseError):
        await db.count_live()


# ------------------------------------------------------------------ CallRecord


def test_call_record_duration_and_json() -> None:
    record = CallRecord(
        call_id="call-1",
        phone_number="+1234567890",
        caller_name="Alice",
        language="en",
        emotion="Calm",
        status=Status.IN_PROGRESS,
        outcome=None,
        reason=None,
        answered=True,
        hangup_requested=False,
        created_at=100.0,
        answered_at=110.0,
        ended_at=None,
        updated_at=110.0,
    )
    assert record.duration_s(now=130.0) == 30.0
    assert record.duration_s(now=50.0) == 0.0  # never negative
    doc = record.to_json()
    assert (doc["ring_s"], doc["talk_s"]) == (10.0, None)  # not ended yet
    assert doc["created_at"] == "1970-01-01T00:01:40.000Z"
    assert doc["timeline"] == []
    assert doc["name"] == "Alice" and doc["status"] == "in_progress"


@pytest.mark.parametrize("how", ["removed", "replaced"])
async def test_a_database_file_removed_under_the_store_refuses_writes(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite goes on writing to an unlinked file: every call recorded after `rm calls.db`
    was accepted, and gone at the next start. Now writes (and the readiness probe) fail."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    try:
        await store.probe_write("a")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        if how == "replaced":
            path.write_bytes(b"")
        for _ in range(2):
            with pytest.raises(DatabaseError, match=f"was {how} under the running server"):
                await store.probe_write("a")
        assert len([r for r in caplog.records if "under the running server" in r.message]) == 1
        assert (await store.count_by_status()) is not None  # reads still answer
    finally:
        await store.close()


async def test_the_retention_purge_finds_an_events_deliveries_by_index(tmp_path: Path) -> None:
    """Each old event's deliveries were found by reading every delivery: 2,000 old events
    among 100,000 deliveries held the writer 15.7 s (every write waited)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    statements = []
    for limit in (None, 2000):  # whole, and by batches as the reaper runs it (review AR)
        program = programs.purge_dispatched_events(store.dialect, time.time(), limit)
        statements += [next(program), program.send([])]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for query in statements:
            plan = " | ".join(
                row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args)
            )
            assert (
                "SCAN deliveries" not in plan and "SCAN p" not in plan and "SCAN d" not in plan
            ), plan


async def test_erasing_a_conversation_finds_its_events_by_index(tmp_path: Path) -> None:
    """Probe AQ: each erased call's events were found by reading the whole outbox (335,000
    events: 1 s a call, 200 a transaction; every request waited on the database thread)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.create_call(new_call(1))
    await store.close()
    program = programs.erase_call_data(store.dialect, time.time() + 1, time.time(), 10)
    statements = [next(program)]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE calls SET ended_at = 1")
        rows = db.execute(statements[0].sql, statements[0].args).fetchall()
        assert len(rows) == 1
        db.row_factory = sqlite3.Row
        row = db.execute(statements[0].sql, statements[0].args).fetchone()
        statements.append(program.send([row]))  # its report's UPDATE
        statements.append(program.send([]))  # its reports' DELETE
        statements.append(program.send([]))  # its events' SELECT
        assert "outbox" in statements[-1].sql
        for query in statements[1:]:
            plan = " | ".join(
                r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args)
            )
            assert "SCAN" not in plan, (query.sql, plan)


async def test_erasing_a_number_finds_its_calls_by_index(tmp_path: Path) -> None:
    """POST /calls/erase read the whole calls table, in the write transaction every other
    write waits for (300,000 calls: 0.1-0.2 s an erasure)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    query = next(programs.calls_to_erase(store.dialect, numbers=["+14155550100"]))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args))
    assert "calls_phone" in plan, plan


async def test_erasing_a_number_finds_its_campaign_recipients_by_index(tmp_path: Path) -> None:
    """POST /calls/erase read every campaign recipient to find a number's (300,000
    recipients: 29 ms an erasure; 0.1 ms by the index)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    forms = ["+14155550100", "14155550100"]
    query = next(campaign_programs.recipients_to_erase(store.dialect, numbers=forms))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args))
    assert "campaign_recipients_phone" in plan, plan


@pytest.mark.parametrize("take_own", [False, True])
async def test_taking_over_undispatched_events_reads_only_those(
    tmp_path: Path, take_own: bool
) -> None:
    """Probe AS: the reaper's pass looked for events a stopped server left undispatched by
    reading the whole outbox in id order (346,000 events: 150-200 ms each 30 s, with nothing
    left undispatched; every request waited on the database thread)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    program = programs.claim_stale_events(store.dialect, time.time(), 60, 500, "me", take_own)
    query = next(program)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        plan = " | ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args))
    assert "SCAN outbox USING INDEX outbox_undispatched" in plan, plan
    assert not re.search(r"SCAN outbox(?! USING)", plan), plan


COUNTS: dict[str, tuple[Any, Callable[[SqliteCallStore], Awaitable[Any]], Any]] = {
    "count_by_status": (programs, lambda s: s.count_by_status(), {"dialing": 1}),
    "count_pending_deliveries": (programs, lambda s: s.count_pending_deliveries(), 0),
    "get_campaign": (campaign_programs, lambda s: s.get_campaign("cmp-1"), None),
    "list_campaigns": (campaign_programs, lambda s: s.list_campaigns(), []),
    # The API's pages: a client polling GET /calls?limit=500 held every write the same way.
    "list_calls": (programs, lambda s: call_ids(s.list_calls()), ["call-000000000001"]),
    "list_deliveries": (programs, lambda s: s.list_deliveries("call-000000000001"), []),
    "list_recipients": (
        campaign_programs,
        lambda s: s.list_recipients("cmp-1", state=None, limit=10, after=None),
        [],
    ),
    "list_dnc": (campaign_programs, lambda s: s.list_dnc(), []),
}


async def call_ids(page: Awaitable[list[CallRecord]]) -> list[str]:
    return [call.call_id for call in await page]


@pytest.mark.parametrize("count", list(COUNTS))
async def test_writes_do_not_wait_for_a_count_over_every_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: str
) -> None:
    """`/metrics` counts calls by status over the whole table: 75-145 ms at 1,000,000 calls,
    and every write queued behind it on the database's one thread (a call's intake, its
    webhooks) waited as long; a campaign's counts of its recipients (8 ms at 100,000) the
    same. Counts run on a connection of their own: here a count held until a write is done
    lets the write through."""
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    gate = threading.Event()
    module, read, expected = COUNTS[count]
    original = getattr(module, count)

    def held(*args: Any) -> programs.Program[Any]:
        gate.wait(10)  # on the thread the count runs on
        return (yield from original(*args))

    monkeypatch.setattr(module, count, held)
    try:
        counting = asyncio.ensure_future(read(store))
        await asyncio.sleep(0.05)  # the count is on its thread, waiting for the gate
        await asyncio.wait_for(store.create_call(new_call(1)), 5)
        assert not counting.done()
        gate.set()
        assert await asyncio.wait_for(counting, 5) == expected
    finally:
        gate.set()
        await store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("calls-db")]


async def test_a_read_aside_sees_one_snapshot_in_all_its_queries(tmp_path: Path) -> None:
    """A page read beside the writes in several queries (a campaign's recipients, then their
    attempts) saw the commits made between them: a recipient `pending` with an attempt and
    no next_attempt_at (a campaign test, now and then). Its queries share one snapshot."""
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    gate = threading.Event()

    def two_counts() -> programs.Program[tuple[int, int]]:
        first = yield programs.Query("SELECT COUNT(*) AS n FROM calls", ())
        gate.wait(10)  # on the reads' thread, between its two queries
        second = yield programs.Query("SELECT COUNT(*) AS n FROM calls", ())
        return first[0]["n"], second[0]["n"]

    try:
        reading = asyncio.ensure_future(store._read_aside(two_counts()))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(store.create_call(new_call(1)), 5)  # committed meanwhile
        gate.set()
        assert await asyncio.wait_for(reading, 5) == (0, 0)
        assert await store.count_by_status() == {"dialing": 1}  # the next read sees it
    finally:
        gate.set()
        await store.close()


async def test_counts_see_every_write_committed_before_them(tmp_path: Path) -> None:
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        assert await store.count_by_status() == {}
        for n in range(3):
            await store.create_call(new_call(n))
            assert await store.count_by_status() == {"dialing": n + 1}
        assert await store.get_call("call-000000000001") is not None
    finally:
        await store.close()


async def test_a_count_after_the_file_was_removed_makes_no_new_file(tmp_path: Path) -> None:
    """The counts' connection opens at the first count, read-only: the file removed before
    it is not created anew (empty, beside the server's), and the count is still read from
    the file the server has open, as its other reads are."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    try:
        await store.create_call(new_call(1))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink()
        assert await store.count_by_status() == {"dialing": 1}
        assert not path.exists()
    finally:
        await store.close()


async def test_a_store_that_counted_closes_twice_and_then_counts_no_more(tmp_path: Path) -> None:
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    assert await store.count_by_status() == {}
    await store.close()
    await store.close()  # the app's cleanup and a test's fixture may both close it
    with pytest.raises(DatabaseError, match="closed"):
        await store.count_by_status()
    assert not [t for t in threading.enumerate() if t.name.startswith("calls-db")]


@pytest.mark.parametrize("on_request", [False, True], ids=["retention", "on-request"])
async def test_an_erased_conversation_leaves_the_database_files(
    tmp_path: Path, on_request: bool
) -> None:
    """The erasure deleted a conversation from the tables, but its bytes stayed in the files
    of a running server: in calls.db-wal (every page the call's reports were written in)
    and in calls.db itself until a checkpoint, which an idle server makes hours later. A
    copy of the directory, or anyone who could read the files, still read what the callee
    said. Once erased, the write-ahead log is checkpointed and emptied, and freed space is
    overwritten (secure_delete), whatever the SQLite build's default."""
    from common.contracts import AgentReport, CallReport, TranscriptTurn

    said = "my card number is 4111 1111 1111 1111, Ann Lee, born 1970"
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    try:
        call = dataclasses.replace(new_call(1), caller_name="Bea Placed-Name")
        await store.create_call(call)
        turn = TranscriptTurn(role="callee", text=said, at_s=1.0)
        final = CallReport(transcript=[turn], summary=f"The callee said {said}")
        reports = [
            AgentReport(call_id=call.call_id, seq=0, kind="turn", at=time.time(), turn=turn),
            AgentReport(call_id=call.call_id, seq=1, kind="final", at=time.time(), final=final),
        ]
        await store.record_reports(reports)
        ended = Change(Status.COMPLETED, answered=True)
        await store.apply(call.call_id, "room_finished", lambda _s: ended, room_finished=True)
        assert any(said.encode() in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
        if on_request:  # the name it was placed with goes too
            assert (await store.erase_calls_now(call_id=call.call_id)).erased == (call.call_id,)
        else:
            assert await store.erase_call_data(time.time() + 1, 10) == 1
        for file in (p for p in tmp_path.iterdir() if p.is_file()):
            assert said.encode() not in file.read_bytes(), file.name
            assert b"Ann Lee" not in file.read_bytes(), file.name
            assert (b"Bea Placed-Name" in file.read_bytes()) is (
                not on_request and file.suffix == ".db"
            )
    finally:
        await store.close()
