"""The readiness probe on PostgreSQL says not ready while a call's row could not be written:
its own table takes its write, but the calls table may be locked (by hand, or by an index
built on it), and every call waited 15 s for a 503 while /readyz said ready (probe AJ)."""

from __future__ import annotations

import time

import asyncpg
import pytest

from common.storage import postgres as postgres_module
from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore


@pytest.fixture(autouse=True)
def long_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement that waited for the lock would wait a minute here (lock_timeout): the
    probe's answer within half of that, saying NOWAIT's words, was not waited for, however
    busy the machine (a bound of 1 s failed once in CI at 2.06 s with 6 workers)."""
    monkeypatch.setattr(postgres_module, "LOCK_WAIT_S", 60.0)


async def test_the_probe_fails_at_once_while_the_calls_table_is_locked(postgres_dsn: str) -> None:
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    locker = await asyncpg.connect(postgres_dsn)
    try:
        await store.probe_write("one")  # ready
        async with locker.transaction():
            await locker.execute("LOCK TABLE calls IN SHARE MODE")  # reads go on, writes wait
            started = time.monotonic()
            with pytest.raises(DatabaseError, match='could not obtain lock on relation "calls"'):
                await store.probe_write("one")
            assert time.monotonic() - started < 30.0  # not waited for
            assert await store.count_live() == 0  # what only reads still works
        await store.probe_write("one")  # ready again once the lock is gone
    finally:
        await locker.close()
        await store.close()


@pytest.mark.parametrize("table", ["events", "outbox", "rate_buckets", "idempotency"])
async def test_the_probe_fails_while_another_table_a_call_writes_is_locked(
    postgres_dsn: str, table: str
) -> None:
    """A call's placement also writes its timeline (events), its webhook events (outbox, which
    migration 0011 indexes), the rate limit's buckets and its Idempotency-Key: one of them
    locked against writes (SHARE, as CREATE INDEX takes) held every call 15 s for a 503 while
    /readyz said ready."""
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    locker = await asyncpg.connect(postgres_dsn)
    try:
        async with locker.transaction():
            await locker.execute(f"LOCK TABLE {table} IN SHARE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseError, match=f'lock on relation "{table}"'):
                await store.probe_write("one")
            assert time.monotonic() - started < 30.0  # not waited for
        await store.probe_write("one")  # ready again once the lock is gone
    finally:
        await locker.close()
        await store.close()


@pytest.mark.parametrize("setting", ["off", "on", "remote_apply"])
async def test_a_database_that_answers_commits_before_writing_them_is_warned_of(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture, setting: str
) -> None:
    """synchronous_commit=off: PostgreSQL answers a COMMIT before its WAL is written, and a
    crash of it lost calls already dialled (BU: 2 calls in 7 SIGKILLs, with no row left and
    their call.dialing sent). Said at start-up, once; a stronger setting is left alone."""
    dsn = f"{postgres_dsn}?synchronous_commit={setting}"  # asyncpg: the sessions' setting
    store = await PostgresCallStore.open(dsn, pool_size=1)
    try:
        async with store._pool.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == setting  # not changed
    finally:
        await store.close()
    said = [r for r in caplog.records if "synchronous_commit is off" in r.getMessage()]
    assert len(said) == (setting == "off")
    assert all(r.levelname == "WARNING" for r in said)
