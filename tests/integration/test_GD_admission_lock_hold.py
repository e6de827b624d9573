"""On PostgreSQL, the admission lock (one for every server on the database) is held for the
limits' check alone, not for the call's writes.

Every placement of every server takes that lock, and each statement under it waits a round
trip on its server's event loop, which a burst keeps busy. Taken before the call's row, its
timeline entry and its outbox event (8 statements under it, COMMIT included), a burst of 200
calls at once to one server behind a 10 ms round trip to PostgreSQL had 100 and 38 of them
placed, the rest answered 503 "calls database unavailable: it did not answer in time" after
10 s in the pool's queue (with the lock taken last: 185 and 123, on the same busy machine).
The check still counts every other call, and the cap still holds under concurrent placements
(tests/contract/test_call_store.py)."""

from __future__ import annotations

from typing import cast

import asyncpg
import pytest

from common.calls.models import NewCall
from common.storage import programs
from common.storage.base import AdmissionLimits, Refused
from common.storage.postgres import PostgresCallStore, numbered
from common.storage.programs import POSTGRES, Query, Row

NOW = 1_764_000_000.0
LIMITS = AdmissionLimits(max_live=2, per_minute=100)


def new_call(n: int) -> NewCall:
    return NewCall(f"call-{n:012d}", "+14155550100", "Ann", "en", "Calm", client="alice")


async def statements_under_the_lock(conn: asyncpg.Connection, call: NewCall) -> list[str]:
    """`call` created as the server creates it (PostgreSQL's program, in one transaction);
    the statements run while the admission lock was held, up to the COMMIT."""
    under: list[str] | None = None
    program = programs.create_call(POSTGRES, call, {}, None, LIMITS, NOW, 60.0, "test")
    async with conn.transaction():
        query: Query = next(program)
        try:
            while True:
                if under is not None:
                    under.append(" ".join(query.sql.split()[:4]))
                if query is POSTGRES.admission_lock:
                    under = []
                rows = cast(list[Row], await conn.fetch(numbered(query.sql), *query.args))
                query = program.send(rows)
        except StopIteration:
            pass
    assert under is not None, "the program never took the admission lock"
    return under


async def test_the_admission_lock_covers_the_check_and_the_rate_count_only(
    postgres_dsn: str,
) -> None:
    store = await PostgresCallStore.open(postgres_dsn)  # migrated
    await store.close()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        under = await statements_under_the_lock(conn, new_call(1))
        assert under == [
            "SELECT live.n AS live,",
            "INSERT INTO rate_buckets (client,",
        ]
        # The call's own row, written before the check, is not counted against the cap.
        await statements_under_the_lock(conn, new_call(2))
        with pytest.raises(Refused) as refused:
            await statements_under_the_lock(conn, new_call(3))
        assert refused.value.refusal.limit == "live"
        assert await conn.fetchval("SELECT COUNT(*) FROM calls") == 2  # the third rolled back
        assert await conn.fetchval("SELECT COUNT(*) FROM outbox") == 2
    finally:
        await conn.close()
