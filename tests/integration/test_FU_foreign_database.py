"""DATABASE_URL naming a database another program already uses (the seed's `.env` keeps the
application's "Database URLs" beside the LiveKit keys, and one of them is often DATABASE_URL).

Such a database has tables of its own, often a `schema_migrations` (golang-migrate, Rails,
Ecto and hand-made migration scripts all name theirs so). The server read that table as its
own. golang-migrate's version 20240101120000 stopped start-up with "has schema version
20240101120000, newer than this code (17): run the release that migrated it, or restore the
copy taken before the upgrade" (no release of ours did; a restore would lose the other
program's data); Rails' text versions with "COALESCE types text and integer cannot be
matched", Ecto's with 'column "name" does not exist', an application's own `calls` table with
'relation "calls" already exists'. None of them said what is wrong: the database is another
program's. Start-up now says so, and touches nothing in it.
"""

from __future__ import annotations

import asyncpg
import pytest

from common.storage.base import DatabaseError, DatabaseNewer
from common.storage.postgres import PostgresCallStore
from tests.helpers import FakeClock

FOREIGN = {
    "golang-migrate": (
        "CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY,"
        " dirty boolean NOT NULL)",
        "INSERT INTO schema_migrations VALUES (20240101120000, false)",
    ),
    "rails": (
        "CREATE TABLE schema_migrations (version character varying NOT NULL PRIMARY KEY)",
        "INSERT INTO schema_migrations VALUES ('20240101120000'), ('20240202120000')",
    ),
    "ecto": (
        "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, inserted_at timestamp(0))",
        "INSERT INTO schema_migrations VALUES (3, now())",
    ),
    # A script of the application's own, with the very columns ours has.
    "same-columns": (
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " applied_at DOUBLE PRECISION NOT NULL)",
        "INSERT INTO schema_migrations VALUES (1, 'create_users', 1700000000), (2,"
        " 'create_orders', 1700000001), (40, 'add_invoices', 1700000002)",
    ),
    "an application's calls table": (
        "CREATE TABLE calls (id serial PRIMARY KEY, phone text)",
        "INSERT INTO calls (phone) VALUES ('+14155550123')",
    ),
}


async def tables(dsn: str) -> dict[str, int]:
    """Every table of the database's public schema, with its row count."""
    conn = await asyncpg.connect(dsn)
    try:
        names = [
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        count = 'SELECT count(*) FROM "{}"'  # noqa: S608 - names from pg_tables
        return {name: await conn.fetchval(count.format(name)) for name in names}
    finally:
        await conn.close()


@pytest.mark.parametrize("program", list(FOREIGN))
async def test_a_database_of_another_program_is_said_so_and_left_alone(
    postgres_dsn: str, program: str
) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        for statement in FOREIGN[program]:
            await conn.execute(statement)
    finally:
        await conn.close()
    before = await tables(postgres_dsn)

    with pytest.raises(DatabaseError) as refused:
        store = await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
        await store.close()

    said = str(refused.value)
    assert not isinstance(refused.value, DatabaseNewer), said  # no release of ours made it
    assert "newer than this code" not in said
    assert "another program's" in said, said
    assert "a database of its own" in said, said
    assert "search_path" in said, said  # or a schema of its own in that database
    assert await tables(postgres_dsn) == before  # nothing made, nothing written


async def test_a_database_this_server_made_opens_as_before(postgres_dsn: str) -> None:
    store = await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
    await store.close()
    store = await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
    await store.close()
    assert "calls" in await tables(postgres_dsn)


async def test_a_newer_release_of_ours_is_still_a_newer_release(postgres_dsn: str) -> None:
    store = await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'later', 0)"
        )
    finally:
        await conn.close()

    with pytest.raises(DatabaseNewer, match="schema version 999, newer than this code"):
        await PostgresCallStore.open(postgres_dsn, clock=FakeClock(), pool_size=2)
