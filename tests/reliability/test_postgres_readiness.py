"""The readiness probe on PostgreSQL says not ready while a call's row could not be written:
its own table takes its write, but the calls table may be locked (by hand, or by an index
built on it), and every call waited 15 s for a 503 while /readyz said ready (probe AJ)."""

from __future__ import annotations

import time

import asyncpg
import pytest

from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore


async def test_the_probe_fails_at_once_while_the_calls_table_is_locked(postgres_dsn: str) -> None:
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    locker = await asyncpg.connect(postgres_dsn)
    try:
        await store.probe_write("one")  # ready
        async with locker.transaction():
            await locker.execute("LOCK TABLE calls IN SHARE MODE")  # reads go on, writes wait
            started = time.monotonic()
            with pytest.raises(DatabaseError, match="lock"):
                await store.probe_write("one")
            assert time.monotonic() - started < 1.0  # not waited for
            assert await store.count_live() == 0  # what only reads still works
        await store.probe_write("one")  # ready again once the lock is gone
    finally:
        await locker.close()
        await store.close()
