"""PostgreSQL's connection slots, used up by the servers' pools together: a server waits for
one of its own connections instead of answering 503 while it holds idle ones. And a pool whose
connections all wait (on a lock, a stalled PostgreSQL) answers those queued behind them in time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from common.storage import postgres as postgres_module
from common.storage.base import DatabaseError, DatabaseStalled
from common.storage.postgres import PostgresCallStore
from common.storage.programs import Program, Query
from tests.pg_cluster import PostgresCluster

LIMIT = 3  # connections PostgreSQL lets the role have


@pytest.fixture
def limited_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by a role PostgreSQL gives LIMIT connections (as a max_connections
    the servers' pools add up past: the same refusal, SQLSTATE 53300)."""
    postgres_cluster.start()
    name = role = "pool_limited"
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE IF EXISTS {role}")
    postgres_cluster._admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT {LIMIT}")
    postgres_cluster._admin(f"CREATE DATABASE {name} OWNER {role}")
    yield postgres_cluster.role_dsn(role, name)
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE {role}")


async def test_a_pool_over_the_slots_left_waits_for_its_own_connections(
    limited_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await PostgresCallStore.open(limited_dsn, pool_size=LIMIT + 5)
    try:
        # More at once than PostgreSQL lets it connect, each holding its connection a while.
        results = await asyncio.gather(
            *(store._run(_sleeping_read(), write=False) for _ in range(4 * LIMIT)),
            return_exceptions=True,
        )
        assert results == [1] * (4 * LIMIT), results
        # Past POOL_WAIT_S, the refusal is the answer (503), as before.
        monkeypatch.setattr(postgres_module, "POOL_WAIT_S", 0.0)
        results = await asyncio.gather(
            *(store._run(_sleeping_read(), write=False) for _ in range(4 * LIMIT)),
            return_exceptions=True,
        )
        assert any(isinstance(r, DatabaseError) for r in results)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def calls_table_locked(dsn: str) -> AsyncIterator[None]:
    """The calls table locked by another session while inside (a DBA's `LOCK TABLE`, a long
    transaction): every statement of ours on it waits."""
    locker = await asyncpg.connect(dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await locker.close()


def _sleeping_read() -> Program[int]:
    rows = yield Query("SELECT 1 AS one FROM pg_sleep(0.05)")
    return int(rows[0]["one"])


async def test_requests_queued_behind_connections_waiting_on_a_lock_are_answered_in_time(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls table locked by another session (a DBA's `LOCK TABLE`, a long transaction):
    every connection of the pool waits on it, and requests queued for one waited behind them
    with no bound (40 reads of one call at once: answered at 15, 30, 45 and 60 s). A request
    that gets no connection within QUEUE_WAIT_S is answered 503, not run."""
    monkeypatch.setattr(postgres_module, "QUEUE_WAIT_S", 0.5)
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    try:
        async with calls_table_locked(postgres_dsn):
            waiting = [asyncio.create_task(store.get_call(f"call-{n}")) for n in range(2)]
            await asyncio.sleep(0.2)  # both connections wait on the lock
            started = time.monotonic()
            async with asyncio.timeout(5):
                with pytest.raises(DatabaseStalled, match="did not answer in time"):
                    await store.get_call("call-queued")
            assert time.monotonic() - started < 4
            assert not any(task.done() for task in waiting)
        assert await asyncio.gather(*waiting) == [None, None]  # they ran once it let go
        assert await store.get_call("call-after") is None  # and the pool serves again
    finally:
        await store.close()


async def test_the_first_request_waiting_on_a_lock_is_answered_as_promptly_as_those_queued(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls table locked by another session: the request that took a connection and
    waited on the lock was answered only at the statement timeout (15 s), a bare "calls
    database unavailable", its connection thrown away, while those queued behind it were
    told at QUEUE_WAIT_S (10 s) that the database did not answer in time. It now waits
    LOCK_WAIT_S at most (lock_timeout) and is told the same; a shorter wait (another of our
    transactions) is waited out."""
    monkeypatch.setattr(postgres_module, "LOCK_WAIT_S", 0.5)
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    locker = await asyncpg.connect(postgres_dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            async with asyncio.timeout(5):
                with pytest.raises(DatabaseStalled, match="did not answer in time"):
                    await store.get_call("call-first")
            assert time.monotonic() - started < 4
        async with locker.transaction():  # held a moment, as our own transactions hold theirs
            await locker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
            waiting = asyncio.create_task(store.get_call("call-brief"))
            await asyncio.sleep(0.2)
        assert await waiting is None
        assert await store.get_call("call-after") is None  # the pool serves on
    finally:
        await locker.close()
        await store.close()
