"""A burst bigger than the pool serves in QUEUE_WAIT_S is told apart from PostgreSQL's own
trouble in the log.

With real servers on PostgreSQL, 300-500 calls posted at once had many answered 503 after
10 s in the pool's queue, and the one ERROR line said only that no connection came free,
each waiting "on PostgreSQL: down or cut off, overloaded, or a lock another session holds":
PostgreSQL was idle meanwhile (pg_stat_activity: most sessions idle), and an operator was sent
to the wrong place. The line now says how many connections the server has
(DATABASE_POOL_SIZE) and how many requests were still waiting for one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.storage import postgres as postgres_module
from common.storage.base import DatabaseStalled
from common.storage.postgres import PostgresCallStore
from tests.reliability.test_postgres_pool import calls_table_locked

QUEUED = 5


async def test_the_no_connection_line_says_the_pool_size_and_the_queue(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(postgres_module, "QUEUE_WAIT_S", 0.5)
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        async with calls_table_locked(postgres_dsn):
            holding = asyncio.create_task(store.get_call("call-holding"))  # the one connection
            await asyncio.sleep(0.2)
            with caplog.at_level(logging.ERROR, logger=postgres_module.__name__):
                queued = await asyncio.gather(
                    *(store.get_call(f"call-{n}") for n in range(QUEUED)),
                    return_exceptions=True,
                )
            assert all(isinstance(r, DatabaseStalled) for r in queued), queued
        assert await holding is None
    finally:
        await store.close()
    lines = [
        r.getMessage()
        for r in caplog.records
        if "no connection" in r.getMessage() or "came free" in r.getMessage()
    ]
    assert len(lines) == 1, lines  # once, not once per request
    assert "none of this server's 1 connections (DATABASE_POOL_SIZE)" in lines[0]
    assert f"{QUEUED - 1} more request(s) waiting for one" in lines[0]
