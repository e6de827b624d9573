"""A COMMIT whose answer is lost (the connection to PostgreSQL breaks as it commits): the
call's row may be written or not. The backend says so (CommitUnknown, never a plain failure),
and the placement asks the database before it answers: a call written after all is placed
(200, dialled once); one that was not is refused (503) with nothing left behind.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from common.calls import service as service_module
from common.calls.models import NewCall
from common.calls.service import NEVER_DIALLED
from common.storage import postgres as postgres_module
from common.storage.base import CommitUnknown, DatabaseError
from common.storage.postgres import PostgresCallStore
from handlers.keys import CALLS, STORE
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_TEST_BODY

Client = TestClient[Any, Any]


def _call(n: int) -> NewCall:
    return NewCall(f"call-{n:012d}", "+1234567890", "Lost Commit", "en", "Calm")


async def test_postgres_tells_a_lost_commit_from_a_failed_transaction(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    try:
        real_exit = asyncpg.transaction.Transaction.__aexit__

        async def commit_then_break(self: Any, *exc_info: Any) -> None:
            await real_exit(self, *exc_info)  # written
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        monkeypatch.setattr(asyncpg.transaction.Transaction, "__aexit__", commit_then_break)
        with pytest.raises(CommitUnknown):
            await store.create_call(_call(1))
        monkeypatch.undo()
        assert await store.get_call("call-000000000001") is not None  # it was written

        real_drive = postgres_module._Drive.run
        calls = 0

        async def break_midway(self: Any, conn: Any) -> Any:
            nonlocal calls
            calls += 1
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        monkeypatch.setattr(postgres_module._Drive, "run", break_midway)
        with pytest.raises(DatabaseError) as raised:
            await store.create_call(_call(2))
        assert not isinstance(raised.value, CommitUnknown)  # it never got to COMMIT
        monkeypatch.setattr(postgres_module._Drive, "run", real_drive)
        # Nothing answered, nothing written: asked once more on a fresh connection (ei).
        assert calls == 2 and await store.get_call("call-000000000002") is None
    finally:
        await store.close()


async def test_a_refused_terminate_does_not_hide_the_first_error(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """During a PostgreSQL restart the pool may already have taken a broken connection back;
    its terminate() then raises InterfaceError, which replaced the real error in the log
    ("cannot call Connection.terminate(): connection has been released back to the pool")."""
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    try:

        async def break_midway(self: Any, conn: Any) -> Any:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        def released(self: Any) -> None:
            raise asyncpg.InterfaceError("cannot call Connection.terminate(): released (test)")

        monkeypatch.setattr(postgres_module._Drive, "run", break_midway)
        monkeypatch.setattr(asyncpg.pool.PoolConnectionProxy, "terminate", released)
        with pytest.raises(DatabaseError) as raised:
            await store.create_call(_call(3))
        assert "ConnectionDoesNotExistError" in str(raised.value)
        assert "connection was closed in the middle" in caplog.text
        assert "released (test)" not in caplog.text
    finally:
        monkeypatch.undo()
        await store.close()


def _dials(client: Client) -> int:
    return sum(r.method == "CreateSIPParticipant" for r in client.app[SANDBOX].requests)


def _lose_the_commit(client: Client, monkeypatch: pytest.MonkeyPatch, *, written: bool) -> None:
    store = client.app[STORE]
    real = store.create_call

    async def create_call(*args: Any, **kwargs: Any) -> Any:
        if written:
            await real(*args, **kwargs)
        raise CommitUnknown("connection lost while committing (test)")

    monkeypatch.setattr(store, "create_call", create_call)


async def test_a_call_written_after_all_is_placed_once(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    _lose_the_commit(client, monkeypatch, written=True)
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    assert resp.status == 200, await resp.text()
    call_id = (await resp.json())["call_id"]
    assert _dials(client) == 1
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] == "dialing" and shown["name"] == "Test User"
    records = json.loads((tmp_path / "config.json").read_text())["calls"]
    assert records[call_id]["caller_name"] == "Test User"  # its agent finds its config


async def test_a_call_not_written_is_refused_and_leaves_nothing(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    _lose_the_commit(client, monkeypatch, written=False)
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    assert resp.status == 503
    assert (await resp.json())["error"] == "calls database unavailable"
    assert _dials(client) == 0
    assert (await (await client.get("/calls")).json())["calls"] == []
    assert json.loads((tmp_path / "config.json").read_text())["calls"] == {}


@pytest.mark.parametrize("written", [True, False])
async def test_a_campaign_whose_commit_answer_is_lost_is_answered_as_it_was_stored(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    """A campaign written though its COMMIT's answer was lost (PostgreSQL restarted as it
    committed) ran and dialled while POST /campaigns answered 503 'calls database
    unavailable' with Retry-After: the retry, without an Idempotency-Key, made a second
    campaign and every recipient was called twice. It is now looked up before the answer."""
    client = await start_app(sandbox_time_scale=100.0)
    store = client.app[STORE]
    real = store.create_campaign

    async def create_campaign(*args: Any, **kwargs: Any) -> Any:
        if written:
            await real(*args, **kwargs)
        raise CommitUnknown("connection lost while committing (test)")

    monkeypatch.setattr(store, "create_campaign", create_campaign)
    body = {"name": "lost commit", "recipients": [{"phone_number": "+14155557701"}]}
    resp = await client.post("/campaigns", json=body)
    listed = (await (await client.get("/campaigns")).json())["campaigns"]
    if written:
        assert resp.status == 201, await resp.text()
        assert [c["campaign_id"] for c in listed] == [(await resp.json())["campaign_id"]]
    else:
        assert resp.status == 503
        assert listed == []


async def test_a_database_that_cannot_say_refuses_the_call_and_never_dials_it(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stays unreachable for the whole check: 503, nobody is dialled; the row
    written after all is settled failed by the reaper (a call never dialled), which frees its
    Idempotency-Key: the client's retry under the same key then places the call."""
    monkeypatch.setattr(service_module, "COMMIT_CHECK_S", 0.3)
    client = await start_app(sandbox_time_scale=100.0)
    store = client.app[STORE]
    _lose_the_commit(client, monkeypatch, written=True)
    real_get = store.get_call
    asked = 0

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        nonlocal asked
        asked += 1
        raise DatabaseError("database unreachable (test)")

    monkeypatch.setattr(store, "get_call", unreachable)
    key = {"Idempotency-Key": "lost-commit-1"}
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY, headers=key)
    assert resp.status == 503
    assert asked >= 2  # asked again until the bound
    assert _dials(client) == 0
    monkeypatch.setattr(store, "get_call", real_get)
    (row,) = (await (await client.get("/calls")).json())["calls"]
    assert row["status"] == "dialing"  # written after all, never dialled
    service = client.app[CALLS]
    real_clock = service.clock
    service.clock = lambda: real_clock() + service_module.PLACEMENT_BOUND_S + 1
    real_settle = store.settle_never_dialled

    async def settle_fails(*args: Any) -> None:
        raise DatabaseError("database unreachable (test)")

    monkeypatch.setattr(store, "settle_never_dialled", settle_fails)
    await service.reap_logged()  # the pass fails on the settling: the next one does it all
    monkeypatch.setattr(store, "settle_never_dialled", real_settle)
    await service.reap()
    call = await (await client.get(f"/calls/{row['call_id']}")).json()
    assert (call["status"], call["reason"]) == (
        "failed",
        NEVER_DIALLED,
    )
    assert _dials(client) == 0
    monkeypatch.undo()  # the database answers again
    service.clock = real_clock
    retry = await client.post("/calls/outbound", json=SEED_TEST_BODY, headers=key)
    assert retry.status == 200, await retry.text()
    placed = await retry.json()
    assert placed["call_id"] != row["call_id"]  # a new call, not the one nobody dialled
    assert _dials(client) == 1
    again = await client.post("/calls/outbound", json=SEED_TEST_BODY, headers=key)
    assert (await again.json())["call_id"] == placed["call_id"]  # now bound to the new call
    assert _dials(client) == 1


async def test_a_dial_the_database_cannot_record_is_not_made(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The row is written, then the database fails as the dial is marked started. The dial
    went ahead: a minute later the reaper took the call for one never dialled ("nobody was
    called"), freed its Idempotency-Key, and the client's retry called the person again. Now
    the number is not dialled (503); the reaper's "nobody was called" is true, and the retry
    under the same key is the one dial."""
    client = await start_app(sandbox_time_scale=100.0)
    store = client.app[STORE]
    real_start = store.start_dial

    async def unreachable(call_id: str, window_open: Any = None) -> Any:
        raise DatabaseError("database unreachable (test)")

    monkeypatch.setattr(store, "start_dial", unreachable)
    key = {"Idempotency-Key": "start-dial-1"}
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY, headers=key)
    assert resp.status == 503
    assert (await resp.json())["error"] == "calls database unavailable"
    assert _dials(client) == 0
    monkeypatch.setattr(store, "start_dial", real_start)
    (row,) = (await (await client.get("/calls")).json())["calls"]
    assert row["status"] == "dialing"  # recorded, never dialled
    assert json.loads((tmp_path / "config.json").read_text())["calls"] == {}
    # Its room (the agent's dispatch) is deleted; the room_finished that follows leaves the
    # call to the reaper, not "no_answer" (nobody was rung) with its key bound for good.
    for _ in range(100):  # the room is deleted in the background; its webhook follows
        shown = await (await client.get(f"/calls/{row['call_id']}")).json()
        if "room_finished" in [e["event"] for e in shown["timeline"]]:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"no room_finished: {shown['timeline']}")
    await client.app[CALLS].reap()  # its grace, with CALLS_SETTLE_GRACE_S over
    shown = await (await client.get(f"/calls/{row['call_id']}")).json()
    assert shown["status"] == "dialing", shown

    service = client.app[CALLS]
    real_clock = service.clock
    service.clock = lambda: real_clock() + service_module.PLACEMENT_BOUND_S + 1
    await service.reap()
    call = await (await client.get(f"/calls/{row['call_id']}")).json()
    assert (call["status"], call["reason"]) == (
        "failed",
        NEVER_DIALLED,
    )
    service.clock = real_clock
    retry = await client.post("/calls/outbound", json=SEED_TEST_BODY, headers=key)
    assert retry.status == 200, await retry.text()
    assert (await retry.json())["call_id"] != row["call_id"]
    assert _dials(client) == 1


@pytest.mark.parametrize("written", [True, False])
async def test_a_dial_start_whose_commit_answer_is_lost_is_dialled_only_if_written(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, written: bool
) -> None:
    """Taken as not written, a mark written after all made the call end no_answer with
    nobody rung, and its Idempotency-Key bound to it for good (the reaper frees only calls
    never marked). The placement asks the database, as it does for the row."""
    client = await start_app(sandbox_time_scale=100.0)
    store = client.app[STORE]
    real_start = store.start_dial

    async def lost(call_id: str, window_open: Any = None) -> Any:
        if written:
            await real_start(call_id, window_open)
        raise CommitUnknown("connection lost while committing (test)")

    monkeypatch.setattr(store, "start_dial", lost)
    resp = await client.post("/calls/outbound", json=SEED_TEST_BODY)
    assert resp.status == (200 if written else 503), await resp.text()
    assert _dials(client) == (1 if written else 0)


async def _table(postgres_dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)  # another server's connection: a migration
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _read_then_write(table: str) -> Any:
    from common.storage.programs import Query

    rows = yield Query(f"SELECT * FROM {table} ORDER BY a", ())  # noqa: S608 - the test's table
    yield Query(f"INSERT INTO {table} (a) VALUES (?)", (len(rows) + 1,))  # noqa: S608
    return [tuple(row) for row in rows]


async def test_a_transaction_goes_on_after_another_server_migrated_the_schema(
    postgres_dsn: str,
) -> None:
    """In a rolling upgrade the newer server migrates the schema: a statement the running
    server had prepared returns other columns now, and asyncpg refuses it inside a
    transaction ("cached statement plan is invalid"). That was a 503 for a call, a LiveKit
    webhook or a campaign attempt; the transaction goes on in a new one now."""
    await _table(postgres_dsn, "CREATE TABLE migrated (a INTEGER)")
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        assert await store._run(_read_then_write("migrated"), write=True) == []
        await _table(postgres_dsn, "ALTER TABLE migrated ADD COLUMN b TEXT")  # the upgrade
        assert await store._run(_read_then_write("migrated"), write=True) == [(1, None)]
        assert await store._run(_read_then_write("migrated"), write=True) == [
            (1, None),
            (2, None),
        ]
    finally:
        await store.close()


def _count_then_read(table: str) -> Any:
    from common.storage.programs import Query

    yield Query("SELECT nextval('moving')", ())  # answers otherwise when asked again
    rows = yield Query(f"SELECT * FROM {table}", ())  # noqa: S608 - the test's table
    yield Query(f"INSERT INTO {table} (a) VALUES (?)", (len(rows) + 1,))  # noqa: S608
    return len(rows)


async def test_a_transaction_whose_answers_changed_is_not_gone_on_with(
    postgres_dsn: str,
) -> None:
    await _table(postgres_dsn, "CREATE TABLE changing (a INTEGER); CREATE SEQUENCE moving")
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        assert await store._run(_count_then_read("changing"), write=True) == 0
        await _table(postgres_dsn, "ALTER TABLE changing ADD COLUMN b TEXT")
        with pytest.raises(DatabaseError, match="the database changed under a transaction"):
            await store._run(_count_then_read("changing"), write=True)
        assert await store._run(_count_then_read("changing"), write=True) == 1  # nothing written
    finally:
        await store.close()


async def test_a_server_stalled_inside_a_transaction_holds_no_other_servers_calls_for_long(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server frozen (SIGSTOP in a probe: a VM's pause, a network cut) while its
    transaction held the admission lock: every server's calls waited for it, then failed
    (15 s, 503), for the whole ten minutes it was stopped. PostgreSQL now ends a session
    idle in a transaction after IDLE_IN_TRANSACTION_S, and its locks with it."""
    from common.storage.base import AdmissionLimits

    monkeypatch.setattr(postgres_module, "IDLE_IN_TRANSACTION_S", 1.0)
    stalled = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    other = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        async with stalled._pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await conn.execute("SELECT pg_advisory_xact_lock(7246001)")  # the admission lock
            loop = asyncio.get_running_loop()
            started = loop.time()
            limits = AdmissionLimits(max_live=100, per_minute=100)
            await asyncio.wait_for(other.create_call(_call(40), limits=limits), 10)
            assert loop.time() - started < 5  # the stalled session's lock went with it
            # Ended: how asyncpg says so depends on when it read the server's notice.
            ended = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
            with pytest.raises(ended):
                await conn.execute("SELECT 1")
    finally:
        await stalled.close()
        await other.close()
