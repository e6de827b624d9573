"""The embedded SQLite store of calls, timelines and idempotent answers, on a real file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.calls_db import (
    SCHEMA_VERSION,
    Applied,
    CallRecord,
    CallsDB,
    DatabaseError,
    Decide,
    IdempotencyClaim,
    NewCall,
    StoredAnswer,
    TimelineEntry,
    iso_time,
)
from common.outcomes import CallState, Change, Signal, Status, next_state
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "calls.db"


@pytest.fixture
async def db(db_path: Path, clock: FakeClock) -> AsyncIterator[CallsDB]:
    opened = await CallsDB.open(db_path, clock)
    yield opened
    await opened.close()


def new_call(call_id: str = "call-000000000001", phone: str = "+1234567890") -> NewCall:
    return NewCall(call_id, phone, "Alice Smith", "en", "Excited")


def raw_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the file with a separate connection, as another process would."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql, args).fetchall())
    finally:
        conn.close()


def set_status(status: Status, reason: str | None = None, answered: bool = False) -> Decide:
    def decide(_state: CallState) -> Change:
        return Change(status, reason, answered)

    return decide


def decide_by(signal: Signal) -> Decide:
    """What the webhook path does: the pure mapping, for one signal."""
    return lambda state: next_state(state, signal)


def nothing(_state: CallState) -> None:
    return None


# ------------------------------------------------------------------ lifecycle and schema


async def test_open_creates_schema(db: CallsDB, db_path: Path) -> None:
    assert db_path.is_file()  # the missing parent directory was created
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 3
    tables = {r[0] for r in raw_rows(db_path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "events", "idempotency", "readiness"} <= tables
    assert raw_rows(db_path, "PRAGMA journal_mode") == [("wal",)]


async def test_reopen_reads_back_everything(db_path: Path, clock: FakeClock) -> None:
    first = await CallsDB.open(db_path, clock)
    claim = IdempotencyClaim("alice", "key-1", "h1")
    assert await first.insert_call(new_call(), {"source": "api"}, claim) is None
    clock.advance(3)
    await first.apply(
        "call-000000000001", "participant_joined", set_status(Status.RINGING), event_id="EV_1"
    )
    await first.request_hangup("call-000000000001")
    await first.answer_idempotent("alice", "key-1", 200, {"status": "success"})
    before = await first.get_call("call-000000000001")
    await first.close()

    second = await CallsDB.open(db_path, clock)
    try:
        after = await second.get_call("call-000000000001")
        assert after == before
        assert after is not None
        assert after.status is Status.RINGING and after.hangup_requested
        assert [e.kind for e in after.timeline] == ["created", "participant_joined"]
        assert after.timeline[0].detail == {"source": "api"}
        assert await second.get_idempotent("alice", "key-1") == StoredAnswer(
            "call-000000000001", "h1", 200, {"status": "success"}
        )
        # The event id is still known: a retried webhook stays a duplicate after a restart.
        applied = await second.apply(
            "call-000000000001", "participant_joined", set_status(Status.FAILED), event_id="EV_1"
        )
        assert applied.duplicate
    finally:
        await second.close()
    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_not_a_database_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"this is not an SQLite database, just text\n" * 200)
    with pytest.raises(DatabaseError, match="not a database"):
        await CallsDB.open(path)
    assert path.read_bytes().startswith(b"this is not")  # left as it was


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(
        DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this code"
    ):
        await CallsDB.open(path)


async def test_closed_database_raises_database_error(db_path: Path) -> None:
    db = await CallsDB.open(db_path)
    await db.close()
    with pytest.raises(DatabaseError):
        await db.get_call("call-000000000001")
    with pytest.raises(DatabaseError):
        await db.insert_call(new_call())


# ------------------------------------------------------------------ calls


async def test_insert_and_get(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call(), {"dispatch": "pending"})
    call = await db.get_call("call-000000000001")
    assert call is not None
    assert (call.call_id, call.phone_number, call.caller_name) == (
        "call-000000000001",
        "+1234567890",
        "Alice Smith",
    )
    assert (call.language, call.emotion) == ("en", "Excited")
    assert call.status is Status.DIALING
    assert (call.outcome, call.reason) == (None, None)
    assert not call.answered and not call.hangup_requested
    assert call.created_at == call.updated_at == clock.now
    assert call.answered_at is None and call.ended_at is None
    assert not call.is_final
    assert call.state == CallState(Status.DIALING)
    assert call.timeline == (
        TimelineEntry("created", None, "dialing", {"dispatch": "pending"}, clock.now, None),
    )


async def test_get_unknown_call(db: CallsDB) -> None:
    assert await db.get_call("call-nope") is None


async def test_duplicate_call_id_is_a_database_error(db: CallsDB) -> None:
    await db.insert_call(new_call())
    with pytest.raises(DatabaseError, match="UNIQUE"):
        await db.insert_call(new_call())
    call = await db.get_call("call-000000000001")
    assert call is not None and len(call.timeline) == 1  # no stray "created" event


async def test_list_calls_newest_first_with_filters(db: CallsDB, clock: FakeClock) -> None:
    ids = [f"call-00000000000{n}" for n in range(5)]
    created: dict[str, float] = {}
    for call_id in ids:
        clock.advance(10)
        await db.insert_call(new_call(call_id))
        created[call_id] = clock.now
    await db.apply(ids[1], "room_finished", set_status(Status.NO_ANSWER, "no answer"))
    await db.apply(ids[3], "room_finished", set_status(Status.BUSY))

    everything = await db.list_calls()
    assert [c.call_id for c in everything] == ids[::-1]
    assert all(c.timeline == () for c in everything)  # lists carry no timelines

    assert [c.call_id for c in await db.list_calls(limit=2)] == [ids[4], ids[3]]
    assert [c.call_id for c in await db.list_calls(status=Status.DIALING)] == [
        ids[4],
        ids[2],
        ids[0],
    ]
    assert [c.call_id for c in await db.list_calls(status=Status.BUSY)] == [ids[3]]
    assert await db.list_calls(status=Status.COMPLETED) == []
    # `before` pages on created_at, strictly.
    assert [c.call_id for c in await db.list_calls(before=created[ids[2]])] == [ids[1], ids[0]]
    page = await db.list_calls(status=Status.DIALING, before=created[ids[4]], limit=1)
    assert [c.call_id for c in page] == [ids[2]]


async def test_count_live_and_by_status(db: CallsDB) -> None:
    assert await db.count_live() == 0
    for n in range(4):
        await db.insert_call(new_call(f"call-00000000000{n}"))
    await db.apply("call-000000000001", "x", set_status(Status.RINGING))
    await db.apply("call-000000000002", "x", set_status(Status.IN_PROGRESS, answered=True))
    await db.apply("call-000000000003", "x", set_status(Status.FAILED, "trunk"))
    assert await db.count_live() == 3
    assert await db.count_by_status() == {"dialing": 1, "ringing": 1, "in_progress": 1, "failed": 1}


async def test_stale_live_calls(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call("call-old-live"))
    await db.insert_call(new_call("call-old-final"))
    await db.apply("call-old-final", "room_finished", set_status(Status.COMPLETED))
    clock.advance(700)
    await db.insert_call(new_call("call-new-live"))
    # A call is stale past its own ringing timeout + max duration (30 + 600 here) + margin.
    assert await db.stale_live_calls(clock.now, 50) == ["call-old-live"]
    assert sorted(await db.stale_live_calls(clock.now + 631, 0)) == [
        "call-new-live",
        "call-old-live",
    ]
    assert await db.stale_live_calls(clock.now, 1000) == []


async def test_stale_uses_each_calls_own_limits(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(dataclasses.replace(new_call("call-short"), max_duration_s=30))
    await db.insert_call(dataclasses.replace(new_call("call-long"), max_duration_s=3600))
    clock.advance(200)
    assert await db.stale_live_calls(clock.now, 60) == ["call-short"]


async def test_request_hangup(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call())
    clock.advance(5)
    call = await db.request_hangup("call-000000000001")
    assert call is not None
    assert call.hangup_requested
    assert call.state == CallState(Status.DIALING, hangup_requested=True)
    assert call.updated_at == clock.now
    assert call.status is Status.DIALING  # asking is not ending
    assert await db.request_hangup("call-unknown") is None


# ------------------------------------------------------------------ apply


async def test_apply_changes_status_and_timeline(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call())
    seen: list[CallState] = []

    def decide(state: CallState) -> Change:
        seen.append(state)
        return Change(Status.RINGING, "ringing now")

    clock.advance(2)
    applied = await db.apply(
        "call-000000000001", "participant_joined", decide, event_id="EV_1", detail={"a": 1}
    )
    assert seen == [CallState(Status.DIALING)]
    assert applied.change == Change(Status.RINGING, "ringing now")
    assert not applied.duplicate and not applied.unknown_call
    assert applied.before is not None and applied.before.status is Status.DIALING
    assert applied.after is not None and applied.after.status is Status.RINGING
    assert applied.after.reason == "ringing now"
    assert applied.after.updated_at == clock.now
    assert applied.after.outcome is None and applied.after.ended_at is None

    call = await db.get_call("call-000000000001")
    assert call is not None
    assert call.timeline[-1] == TimelineEntry(
        "participant_joined", "dialing", "ringing", {"a": 1}, clock.now, "EV_1"
    )
    assert call.timeline[-1].to_json() == {
        "event": "participant_joined",
        "from": "dialing",
        "to": "ringing",
        "at": iso_time(clock.now),
        "event_id": "EV_1",
        "detail": {"a": 1},
    }


async def test_apply_answer_and_final_outcome(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call())
    start = clock.now
    clock.advance(5)
    await db.apply(
        "call-000000000001", "track_published", set_status(Status.IN_PROGRESS, None, True)
    )
    answered_at = clock.now
    clock.advance(5)
    # A later change that does not say "answered" never un-answers the call.
    await db.apply("call-000000000001", "x", set_status(Status.IN_PROGRESS, None, False))
    clock.advance(32)
    applied = await db.apply("call-000000000001", "room_finished", set_status(Status.COMPLETED))
    call = applied.after
    assert call is not None
    assert call.status is Status.COMPLETED and call.is_final
    assert call.outcome == "completed"
    assert call.answered and call.answered_at == answered_at
    assert call.ended_at == clock.now
    assert call.duration_s() == 42.0
    assert call.created_at == start
    doc = call.to_json(with_timeline=False)
    assert doc["status"] == doc["outcome"] == "completed"
    assert (doc["ring_s"], doc["talk_s"]) == (5.0, 37.0)
    assert doc["answered_at"] == iso_time(answered_at)
    assert doc["room"] == doc["call_id"] == "call-000000000001"
    assert "timeline" not in doc


async def test_apply_keeps_earlier_reason_when_change_has_none(db: CallsDB) -> None:
    await db.insert_call(new_call())
    await db.apply("call-000000000001", "x", set_status(Status.RINGING, "first reason"))
    applied = await db.apply("call-000000000001", "x", set_status(Status.NO_ANSWER))
    assert applied.after is not None and applied.after.reason == "first reason"
    assert applied.after.outcome == "no_answer"


async def test_apply_without_change_records_the_event(db: CallsDB) -> None:
    await db.insert_call(new_call())
    applied = await db.apply("call-000000000001", "room_started", nothing, event_id="EV_9")
    assert applied.change is None
    assert applied.before == applied.after
    assert applied.after is not None and applied.after.status is Status.DIALING
    call = await db.get_call("call-000000000001")
    assert call is not None
    assert [(e.kind, e.from_status, e.to_status, e.event_id) for e in call.timeline] == [
        ("created", None, "dialing", None),
        ("room_started", None, None, "EV_9"),
    ]


async def test_duplicate_event_id_is_applied_once(db: CallsDB) -> None:
    await db.insert_call(new_call())
    first = await db.apply(
        "call-000000000001", "participant_joined", set_status(Status.RINGING), event_id="EV_1"
    )
    assert first.change is not None and not first.duplicate
    calls: list[CallState] = []

    def decide(state: CallState) -> Change:
        calls.append(state)
        return Change(Status.FAILED)

    again = await db.apply("call-000000000001", "participant_joined", decide, event_id="EV_1")
    assert again == Applied(duplicate=True)
    assert calls == []  # the decision is not even asked for
    call = await db.get_call("call-000000000001")
    assert call is not None and call.status is Status.RINGING
    assert [e.event_id for e in call.timeline].count("EV_1") == 1


async def test_events_without_id_are_never_duplicates(db: CallsDB) -> None:
    await db.insert_call(new_call())
    for _ in range(3):
        applied = await db.apply("call-000000000001", "note", nothing)
        assert not applied.duplicate
    call = await db.get_call("call-000000000001")
    assert call is not None and len(call.timeline) == 4


async def test_apply_to_unknown_call(db: CallsDB, db_path: Path) -> None:
    applied = await db.apply(
        "call-unknown", "room_finished", set_status(Status.FAILED), event_id="E"
    )
    assert applied == Applied(unknown_call=True)
    assert raw_rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


class DecideFailed(Exception):
    pass


async def test_failing_decide_rolls_back_and_surfaces(db: CallsDB) -> None:
    await db.insert_call(new_call())
    before = await db.get_call("call-000000000001")

    def decide(_state: CallState) -> Change:
        raise DecideFailed("boom")

    with pytest.raises(DecideFailed, match="boom"):
        await db.apply("call-000000000001", "room_finished", decide, event_id="EV_X")
    assert await db.get_call("call-000000000001") == before
    # The event id was not consumed: a retry is applied, and the connection is usable.
    applied = await db.apply(
        "call-000000000001", "room_finished", set_status(Status.COMPLETED), event_id="EV_X"
    )
    assert applied.after is not None and applied.after.status is Status.COMPLETED


async def test_failure_after_the_update_leaves_nothing_half_written(db: CallsDB) -> None:
    # decide succeeds and the UPDATE runs; storing the event then fails (detail is not JSON).
    await db.insert_call(new_call())
    before = await db.get_call("call-000000000001")
    with pytest.raises(TypeError, match="not JSON serializable"):
        await db.apply(
            "call-000000000001",
            "room_finished",
            set_status(Status.COMPLETED),
            event_id="EV_Y",
            detail={"bad": object()},
        )
    after = await db.get_call("call-000000000001")
    assert after == before
    assert after is not None and after.status is Status.DIALING and after.ended_at is None
    assert await db.count_live() == 1


async def test_runtime_error_in_decide_is_not_reported_as_closed(db: CallsDB) -> None:
    await db.insert_call(new_call())

    def decide(_state: CallState) -> Change:
        raise RuntimeError("decision failed")

    with pytest.raises(RuntimeError, match="decision failed"):
        await db.apply("call-000000000001", "room_finished", decide)


async def test_webhook_sequence_through_next_state(db: CallsDB, clock: FakeClock) -> None:
    await db.insert_call(new_call())
    signals = [
        Signal("participant_joined", "call-000000000001", True, "ringing"),
        Signal("track_published", "call-000000000001", True, "active"),
        Signal("participant_left", "call-000000000001", True, "hangup", "CLIENT_INITIATED"),
        Signal("room_finished", "call-000000000001"),
    ]
    for n, signal in enumerate(signals):
        clock.advance(1)
        await db.apply(
            signal.room,
            signal.event,
            decide_by(signal),
            event_id=f"EV_{n}",
        )
    call = await db.get_call("call-000000000001")
    assert call is not None
    assert call.status is Status.COMPLETED and call.answered
    assert [(e.kind, e.to_status) for e in call.timeline] == [
        ("created", "dialing"),
        ("participant_joined", "ringing"),
        ("track_published", "in_progress"),
        ("participant_left", None),
        ("room_finished", "completed"),
    ]


# ------------------------------------------------------------------ idempotency


async def test_idempotency_key_is_recorded_with_its_call(db: CallsDB) -> None:
    assert await db.get_idempotent("alice", "k1") is None
    claim = IdempotencyClaim("alice", "k1", "h1")
    assert await db.insert_call(new_call("call-a"), None, claim) is None
    # Bound before any answer: a retry learns the call, with no answer yet.
    assert await db.get_idempotent("alice", "k1") == StoredAnswer("call-a", "h1")
    assert await db.get_idempotent("bob", "k1") is None  # keys are per client
    assert await db.get_idempotent("alice", "k2") is None
    await db.answer_idempotent("alice", "k1", 200, {"status": "success", "call_id": "call-a"})
    assert await db.get_idempotent("alice", "k1") == StoredAnswer(
        "call-a", "h1", 200, {"status": "success", "call_id": "call-a"}
    )


async def test_a_taken_key_records_nothing(db: CallsDB) -> None:
    claim = IdempotencyClaim("alice", "k1", "h1")
    assert await db.insert_call(new_call("call-a"), None, claim) is None
    taken = await db.insert_call(new_call("call-b"), None, claim)
    assert taken == StoredAnswer("call-a", "h1")
    assert await db.get_call("call-b") is None  # the second call was never recorded


async def test_release_frees_a_key_only_for_its_own_call(db: CallsDB) -> None:
    claim = IdempotencyClaim("alice", "k1", "h1")
    await db.insert_call(new_call("call-a"), None, claim)
    await db.release_idempotent("alice", "k1", "call-other")
    assert await db.get_idempotent("alice", "k1") is not None
    await db.release_idempotent("alice", "k1", "call-a")
    assert await db.get_idempotent("alice", "k1") is None
    assert await db.insert_call(new_call("call-b"), None, claim) is None


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
    db = await CallsDB.open(path)
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
