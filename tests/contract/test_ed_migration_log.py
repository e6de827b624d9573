"""An upgrade says it is migrating before it does: the server does not listen meanwhile, and
an index built over a large table takes a while (a 1 GB calls.db of schema 10: 3.4 s with no
line between 'starting on ...' and 'at schema version 23 (was 10)'; an hour may be allowed a
PostgreSQL statement). A new database's schema, made at once, is not announced."""

from __future__ import annotations

import contextlib
import logging
import sqlite3

import asyncpg
import pytest

from common.storage.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from common.storage.postgres import PostgresCallStore
from common.storage.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from common.storage.sqlite import SqliteCallStore
from tests.contract.conftest import Backend

UNDO_PLACED_BY = (
    "ALTER TABLE calls DROP COLUMN placed_by; ALTER TABLE calls DROP COLUMN placed_run;"
)


def migrating_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "migrating from" in r.getMessage()]


async def test_an_upgrade_says_it_migrates_before_it_does(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="common.storage"):
        store = await backend.open()  # a new database
    assert migrating_lines(caplog) == []
    # Back to the release before placed_by (SQLite 21, PostgreSQL 15).
    if isinstance(store, PostgresCallStore):
        before, now = 15, POSTGRES_VERSION
        conn = await asyncpg.connect(store.dsn)
        try:
            await conn.execute(UNDO_PLACED_BY)
            await conn.execute("DELETE FROM schema_migrations WHERE version > 15")
        finally:
            await conn.close()
    else:
        assert isinstance(store, SqliteCallStore)
        before, now = 21, SQLITE_VERSION
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.executescript(
                f"{UNDO_PLACED_BY} DROP INDEX deliveries_due_heads;"  # and 0024's
                " DROP INDEX deliveries_claimed;"
                " ALTER TABLE deliveries DROP COLUMN behind;"
                " ALTER TABLE outbox DROP COLUMN takeovers;"  # and 0025's
                " ALTER TABLE outbox DROP COLUMN given_up_at; PRAGMA user_version = 21;"
            )
        db.close()
    await store.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="common.storage"):
        store = await backend.open()
        await store.close()
    said = [r.getMessage() for r in caplog.records]
    (line,) = migrating_lines(caplog)
    assert f"migrating from schema version {before} to {now}" in line
    assert "nothing is served until it is done" in line
    applied = [i for i, text in enumerate(said) if "schema version" in text and text != line]
    assert applied and said.index(line) < applied[0], said
