"""bench/storage_choice.py's variants still do what the server's store does: its SQLAlchemy
Core variant's Tables are the migrated schema's (a copy of them fell behind the migrations and
the bench stopped at its open), and a few calls leave the same database in every variant (its
events said less of their call than the server's do, and the bench's own check failed)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import storage_choice as bench
from common.storage.sqlite import MIGRATIONS

CALLS = 3


def test_the_core_tables_are_the_migrated_schemas() -> None:
    db = sqlite3.connect(":memory:")
    for migration in MIGRATIONS:
        for statement in migration.statements:
            db.execute(statement)
    for name, table in bench.metadata.tables.items():
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({name})")]
        assert [c.name for c in table.columns] == columns, name
    db.close()


@pytest.mark.parametrize("variant", bench.VARIANTS[1:], ids=[v.name for v in bench.VARIANTS[1:]])
async def test_a_few_calls_leave_the_same_database_as_the_servers_store(
    variant: bench.Variant, tmp_path: Path
) -> None:
    """The same as the real store's (programs+thread), the bench's own check."""
    digests = []
    for one in (bench.VARIANTS[0], variant):
        path = tmp_path / f"{one.name}.db"
        store = await one.open(path)
        try:
            for plan in bench.plan_calls("t", CALLS):
                await bench.one_call(store, plan)
        finally:
            await store.close()
        problems, digest = bench.check_database(path, CALLS)
        assert problems == []
        digests.append(digest)
    assert digests[0] == digests[1]


async def test_its_counting_store_opens(tmp_path: Path) -> None:
    """The untimed counting pass opens the real store as the server does (the store's open
    gained an argument, and the bench stopped there with a TypeError)."""
    store = await bench._CountingSqliteStore.open(tmp_path / "counting.db")
    try:
        await bench.one_call(store, bench.plan_calls("t", 1)[0])
        assert isinstance(store, bench._CountingSqliteStore) and store.counts.hops > 0
    finally:
        await store.close()
