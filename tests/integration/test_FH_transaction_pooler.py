"""Behind a pooler in transaction mode (PgBouncer's pool_mode=transaction, before 1.21 or
without max_prepared_statements), each transaction runs on whichever PostgreSQL session is
free, and the statements asyncpg prepared on one are not on the next: every request, the
reaper, the webhook sender and the campaigns failed, 503 'prepared statement
"__asyncpg_stmt_48__" does not exist' (seen with PgBouncer 1.18 in front of the test
cluster: 20 calls of 20 refused), and nothing said why. Here PostgreSQL's DEALLOCATE ALL
plays the pooler: the session the pool's connection leads to has none of its statements."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore


async def _forget_prepared_statements(store: PostgresCallStore) -> None:
    async with store._pool.acquire() as conn:
        await conn.execute("DEALLOCATE ALL")


@pytest.mark.parametrize("first", ["read", "write"])
async def test_statements_not_kept_by_the_session_are_prepared_again_and_said_once(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture, first: str
) -> None:
    store = await PostgresCallStore.open(postgres_dsn, pool_size=1)
    try:
        assert await store.count_live() == 0  # its statement prepared, and cached
        await store.probe_write("one")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="common.storage.postgres"):
            for _ in range(2):  # the first one met, then no more
                await _forget_prepared_statements(store)
                if first == "read":
                    assert await store.count_live() == 0
                    await store.probe_write("one")
                else:
                    await store.probe_write("one")  # in its transaction
                    assert await store.count_live() == 0
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == 1, said
        assert "pooler in transaction mode" in said[0]
        assert "max_prepared_statements" in said[0]
    finally:
        await store.close()


@pytest.mark.parametrize("migrate", [True, False])
async def test_a_statement_found_on_the_session_handed_at_start_up_does_not_stop_it(
    postgres_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    migrate: bool,
) -> None:
    """Two servers starting together behind PgBouncer in transaction mode: the second was
    handed the session the first had prepared its first statement on, and stopped, 'cannot
    migrate ...: prepared statement "__asyncpg_stmt_1__" already exists' (seen with PgBouncer
    1.18). asyncpg's refusal is made here as the pooler made it, at the first statement."""
    await (await PostgresCallStore.open(postgres_dsn)).close()  # migrated: a check has a schema
    original = asyncpg.Connection.fetchval
    met: list[str] = []

    async def first_one_there(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if not met:
            met.append(str(args[0]))
            raise asyncpg.DuplicatePreparedStatementError(
                'prepared statement "__asyncpg_stmt_1__" already exists'
            )
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetchval", first_one_there)
    with caplog.at_level(logging.WARNING, logger="common.storage.postgres"):
        store = await PostgresCallStore.open(postgres_dsn, migrate=migrate)
    try:
        assert met
        assert await store.count_live() == 0
        assert any("pooler in transaction mode" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_a_pooler_refusing_the_session_settings_is_told_what_to_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PgBouncer without them in ignore_startup_parameters refuses every connection, as it
    did here with PgBouncer 1.18: the line said only 'unsupported startup parameter:
    idle_in_transaction_session_timeout'."""

    async def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise asyncpg.ProtocolViolationError(
            "unsupported startup parameter: idle_in_transaction_session_timeout"
        )

    monkeypatch.setattr(asyncpg, "create_pool", refused)
    with pytest.raises(DatabaseError) as refusal:
        await PostgresCallStore.open("postgresql://calls:secret@127.0.0.1:6432/calls")
    said = str(refusal.value)
    assert "ignore_startup_parameters" in said
    assert "idle_in_transaction_session_timeout, lock_timeout" in said
    assert "secret" not in said
