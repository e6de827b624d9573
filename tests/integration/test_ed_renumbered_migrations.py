"""A database migrated by the release of 2026-12-04 that was backed out (a49e7b0 to 0f985a5).

That release numbered its migration `line_joined` 16 on SQLite and 11 on PostgreSQL, and the
outbox index after it 17 and 12. Backing it out gave those numbers to other migrations, so a
database it migrated was past them by number and the upgrade skipped them: on PostgreSQL at
12 the table campaign_uploads was never made (every POST /campaigns failed), on SQLite the
outbox lacked an index. Each database is built here as that release left it: this code's
migrations below those numbers, then the backed-out release's own statements.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from common.storage.migrations import migrations_for, renumbered
from common.storage.postgres import PostgresCallStore
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock

# The backed-out release's migrations, as it shipped them (`--` comments left out).
SQLITE_LINE_JOINED = (
    "ALTER TABLE calls ADD COLUMN line_joined_at REAL",
    "UPDATE calls SET line_joined_at = dial_started_at WHERE dial_started_at IS NOT NULL",
)
POSTGRES_LINE_JOINED = (
    "ALTER TABLE calls ADD COLUMN IF NOT EXISTS line_joined_at DOUBLE PRECISION",
    "UPDATE calls SET line_joined_at = dial_started_at"
    " WHERE dial_started_at IS NOT NULL AND line_joined_at IS NULL",
)
OUTBOX_BY_CALL = ("CREATE INDEX IF NOT EXISTS outbox_call ON outbox (call_id)",)

CAMPAIGN = {
    "name": "After the upgrade",
    "recipients": [{"phone_number": "+14155557701", "name": "Alice"}],
}


def sqlite_as_the_backed_out_release_left_it(path: Path, *, with_outbox_index: bool) -> None:
    """a49e7b0 (schema 16: line_joined) or 8f8c863 (17: line_joined, then outbox_by_call)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for migration in migrations_for("sqlite"):
            if migration.version < 16:
                for statement in migration.statements:
                    db.execute(statement)
        for statement in SQLITE_LINE_JOINED + (OUTBOX_BY_CALL if with_outbox_index else ()):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {17 if with_outbox_index else 16}")
    db.close()


def outbox_indexes(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    db.close()
    return {name for (name,) in rows}


@pytest.mark.parametrize("with_outbox_index", [False, True], ids=["a49e7b0", "8f8c863"])
async def test_a_sqlite_database_of_the_backed_out_release_gets_what_it_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, with_outbox_index: bool
) -> None:
    path = tmp_path / "calls.db"
    sqlite_as_the_backed_out_release_left_it(path, with_outbox_index=with_outbox_index)
    assert "outbox_undispatched" not in outbox_indexes(path)
    with caplog.at_level(logging.WARNING, logger="common.storage.sqlite"):
        store = await SqliteCallStore.open(path, FakeClock())
        await store.close()
    # outbox_call: erasing a call's conversation; outbox_undispatched: the reaper's pass.
    assert {"outbox_call", "outbox_undispatched"} <= outbox_indexes(path)
    said = [r.getMessage() for r in caplog.records if "had been skipped" in r.getMessage()]
    skipped = "0017 (outbox_undispatched)" if with_outbox_index else "0016 (outbox_by_call)"
    assert len(said) == 1 and skipped in said[0] and "applied now" in said[0], said
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="common.storage.sqlite"):
        store = await SqliteCallStore.open(path, FakeClock())  # the next start: nothing to do
        await store.close()
    assert not [r for r in caplog.records if "had been skipped" in r.getMessage()]


async def test_a_sqlite_database_without_the_mark_is_left_as_it_is(tmp_path: Path) -> None:
    """A database of today's line, its outbox index dropped by hand: not this repair's to
    make again (the mark of the backed-out release is what says its migrations were skipped)."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path, FakeClock())
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP INDEX outbox_call")
    db.close()
    store = await SqliteCallStore.open(path, FakeClock())
    await store.close()
    assert "outbox_call" not in outbox_indexes(path)


async def postgres_as_the_backed_out_release_left_it(dsn: str) -> None:
    """8f8c863's PostgreSQL schema 12: this code's 1-10, then line_joined and outbox_by_call
    recorded as 11 and 12."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
        )
        applied: list[tuple[int, str, tuple[str, ...]]] = [
            (m.version, m.name, m.statements) for m in migrations_for("postgres") if m.version <= 10
        ]
        applied += [
            (11, "line_joined", POSTGRES_LINE_JOINED),
            (12, "outbox_by_call", OUTBOX_BY_CALL),
        ]
        for version, name, statements in applied:
            for statement in statements:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)", version, name, time.time()
            )
    finally:
        await conn.close()


async def test_a_postgres_database_of_the_backed_out_release_takes_campaigns_again(
    postgres_dsn: str, start_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await postgres_as_the_backed_out_release_left_it(postgres_dsn)
    with caplog.at_level(logging.WARNING, logger="common.storage.postgres"):
        client = await start_app(database_url=postgres_dsn)
    said = [r.getMessage() for r in caplog.records if "had been skipped" in r.getMessage()]
    assert len(said) == 1, said
    assert "0011 (outbox_by_call), 0012 (campaign_uploads)" in said[0]
    assert "line_joined, outbox_by_call" in said[0]
    later = datetime.now(UTC) + timedelta(days=30)  # nobody is called during the test
    resp = await client.post("/campaigns", json={**CAMPAIGN, "start_at": later.isoformat()})
    assert resp.status == 201, await resp.text()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations")
        names = {row["version"]: row["name"] for row in rows}
    finally:
        await conn.close()
    # Recorded under their own names: the next start finds nothing skipped.
    assert {names[11], names[12]} == {"outbox_by_call", "campaign_uploads"}
    store = await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
    await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_migrations_applied_again_may_run_twice(backend: str) -> None:
    """A database that got them (or some of what they make) runs them again each start."""
    for migration in renumbered(backend):
        for statement in migration.statements:
            assert statement.startswith(("CREATE INDEX IF NOT EXISTS", "CREATE TABLE IF NOT"))


async def test_a_tool_that_only_reads_leaves_the_repair_to_the_server(tmp_path: Path) -> None:
    """`agent describe` opens calls.db not to migrate it: a database of the backed-out
    release that an earlier upgrade took to today's version is left for the server."""
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path, FakeClock())
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(SQLITE_LINE_JOINED[0])
        db.execute("DROP INDEX outbox_undispatched")
    db.close()
    store = await SqliteCallStore.open(path, FakeClock(), migrate=False)
    await store.close()
    assert "outbox_undispatched" not in outbox_indexes(path)
    store = await SqliteCallStore.open(path, FakeClock())
    await store.close()
    assert "outbox_undispatched" in outbox_indexes(path)
