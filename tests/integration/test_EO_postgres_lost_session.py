"""A PostgreSQL session ended under a transaction: the log says why, not that the rollback
could not run on it."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest

from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore
from common.storage.programs import Program, Query


def _held_open(pids: list[int]) -> Program[None]:
    """A write that says its session and then waits inside its transaction."""
    rows = yield Query("SELECT pg_backend_pid() AS pid")
    pids.append(int(rows[0]["pid"]))
    yield Query("SELECT pg_sleep(30)")


async def test_a_session_ended_mid_transaction_is_said_as_postgresql_said_it(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL ending a session mid-transaction (a restart's fast shutdown, a DBA's
    pg_terminate_backend, a failover) was logged as what the rollback then met: "calls
    database unreachable: cannot call Transaction.__aexit__(): the underlying connection is
    closed" (or "cannot switch to state 15; another operation (2) is in progress"), the
    request's error "(InterfaceError)": what PostgreSQL said went unsaid."""
    caplog.set_level(logging.ERROR, logger="common.storage.postgres")
    store = await PostgresCallStore.open(postgres_dsn, pool_size=2)
    pids: list[int] = []
    try:
        write = asyncio.create_task(store._run(_held_open(pids), write=True))
        async with asyncio.timeout(10):
            while not pids:
                await asyncio.sleep(0.01)
        admin = await asyncpg.connect(postgres_dsn)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pids[0])
        finally:
            await admin.close()
        with pytest.raises(DatabaseError) as raised:
            await write
    finally:
        await store.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("terminating connection due to administrator command" in s for s in said), said
    assert not any("__aexit__" in s for s in said), said
    assert "InterfaceError" not in str(raised.value)
