"""A request cancelled while its PostgreSQL connection was being given back to the pool (a
probe's or a scrape's bound running out, a stop, a client gone) left asyncpg's shielded
release going on alone; when that release then failed (the connection cut: PostgreSQL
restarted, the host gone), nothing took its error and asyncio logged "Task exception was never
retrieved" at ERROR, with a traceback and no word of what happened (seen failing
test_FL_report_metrics' teardown under load). The release's outcome is now taken, and its
connection, terminated by asyncpg, is one the pool replaces."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

import asyncpg
import pytest

from common.storage.postgres import PostgresCallStore


async def test_a_release_cut_off_after_its_caller_was_cancelled_logs_no_error(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        resetting, cut = asyncio.Event(), asyncio.Event()
        reset = asyncpg.Connection.reset

        async def cut_off(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> None:
            resetting.set()  # the pool's reset of it is under way: PostgreSQL stops answering
            await cut.wait()
            raise asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")

        async def use() -> None:
            async with store._connection() as conn:
                await conn.fetchval("SELECT 1")

        with caplog.at_level(logging.ERROR):
            monkeypatch.setattr(asyncpg.Connection, "reset", cut_off)
            user = asyncio.create_task(use())
            await resetting.wait()
            user.cancel()  # its bound ran out: the caller goes, the release goes on
            with contextlib.suppress(asyncio.CancelledError):
                await user
            cut.set()  # and then fails
            monkeypatch.setattr(asyncpg.Connection, "reset", reset)
            # The pool's one connection comes free once that release is over (terminated):
            # the next request has a fresh one.
            assert await store.count_live() == 0
            gc.collect()  # an error nobody took is said as its task is collected
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
    finally:
        await store.close()
