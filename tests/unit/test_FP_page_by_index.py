"""A page of `GET /calls` (and `GET /campaigns`) after the first is found by the created_at
index's range, not by reading the index from the newest row down to the page: with the
`<created_at>:<call_id>` token, SQLite scanned from the top (300,000 calls: 35 ms for the
last page, on the database thread every write waits for) and PostgreSQL filtered every newer
row (24 ms, 150,000 rows removed by its filter, in the middle of 300,000)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from common.calls.models import NewCall
from common.calls.outcomes import Status
from common.storage import campaign_programs, programs
from common.storage.paging import Before
from common.storage.postgres import PostgresCallStore, numbered
from common.storage.programs import POSTGRES, Query
from common.storage.sqlite import SqliteCallStore

FIRST = NewCall("call-000000000000", "+14155550100", "Ann", "en", "Calm")
BASE = 1_764_000_000.0
PAGE_END = Before(BASE + 5_000, "call-000000003a98")  # a page in the middle of the history


def queries() -> list[Query]:
    return [
        next(programs.list_calls(programs.SQLITE, None, 51, PAGE_END)),
        next(programs.list_calls(programs.SQLITE, Status.COMPLETED, 51, PAGE_END)),
        next(campaign_programs.list_campaigns(programs.SQLITE, 51, PAGE_END)),
    ]


async def test_sqlite_pages_by_the_created_at_range(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path)
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        for query in queries():
            plan = " | ".join(
                r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {query.sql}", query.args)
            )
            assert "SCAN" not in plan and "created_at<?" in plan, (query.sql, plan)


async def test_postgres_pages_without_filtering_newer_calls(postgres_dsn: str) -> None:
    store = await PostgresCallStore.open(postgres_dsn)
    await store.create_call(FIRST)
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'calls' ORDER BY ordinal_position"
            )
        ]
        made = {  # 30,000 calls, three created in each instant
            "call_id": "'call-' || lpad(to_hex(v), 12, '0')",
            "created_at": f"{BASE} + (v / 3)",
            "status": "(ARRAY['completed', 'no_answer', 'busy'])[v % 3 + 1]",
        }
        values = ", ".join(made.get(c, c) for c in columns)
        await conn.execute(
            f"INSERT INTO calls ({', '.join(columns)}) SELECT {values}"  # noqa: S608 - ours
            " FROM generate_series(1, 30000) v, (SELECT * FROM calls WHERE call_id = $1) c",
            FIRST.call_id,
        )
        await conn.execute("ANALYZE calls")
        query = next(programs.list_calls(POSTGRES, None, 51, PAGE_END))
        plan = "\n".join(
            r[0] for r in await conn.fetch(f"EXPLAIN ANALYZE {numbered(query.sql)}", *query.args)
        )
        rows = await conn.fetch(numbered(query.sql), *query.args)
    finally:
        await conn.close()
    removed = [
        int(line.rsplit(":", 1)[1]) for line in plan.splitlines() if "Removed by Filter" in line
    ]
    assert sum(removed) < 100, plan
    # The page is the one that follows the token: older, or as old with a smaller id.
    assert [r["call_id"] for r in rows[:3]] == [
        "call-000000003a97",
        "call-000000003a96",
        "call-000000003a95",
    ]


@pytest.mark.parametrize("at", [BASE + 5_000])
def test_the_bound_keeps_the_page(at: float) -> None:
    """The added bound only narrows the index range: the condition is the same."""
    query = next(programs.list_calls(programs.SQLITE, None, 51, Before(at, "call-x")))
    with contextlib.closing(sqlite3.connect(":memory:")) as db, db:
        db.execute("CREATE TABLE t (created_at REAL, call_id TEXT)")
        rows = [(at + d, f"call-{c}") for d in (-1, 0, 1) for c in "wxy"]
        db.executemany("INSERT INTO t VALUES (?, ?)", rows)
        where = query.sql.split("WHERE ", 1)[1].split(" ORDER BY", 1)[0]
        kept = db.execute(f"SELECT * FROM t WHERE {where}", query.args[:-1]).fetchall()  # noqa: S608
    assert sorted(kept) == sorted(r for r in rows if r[0] < at or (r[0] == at and r[1] < "call-x"))
