"""On PostgreSQL, new calls' admissions hold at most three quarters of the pool: a burst of new
requests no longer takes every connection from the calls already recorded.

Seen with real servers on PostgreSQL, 200 calls posted at once to one server (10 ms round
trip to the database): the pool's one FIFO queue held each placement's next step (marking its
dial, recording it) behind the admissions of the requests that came after it. Calls already
recorded were answered 503 "could not mark its dial as started, so it is not dialled" after
10 s in the queue, each left `dialing` for the reaper (its live slot and its Idempotency-Key
held for about a minute and a half); answers took up to 25 s (two or three waits of 10 s).
With a quarter of the pool kept from new admissions: no call left undialled, the 503s given
at the admission (nothing recorded) at 10.9 s, every answer within 16 s."""

from __future__ import annotations

import asyncio

import pytest

from common.storage import postgres as postgres_module
from common.storage.base import DatabaseStalled, asking_for_a_new_call
from common.storage.postgres import PostgresCallStore, new_call_share
from tests.reliability.test_postgres_pool import calls_table_locked

POOL = 4


def test_the_share_keeps_a_quarter_of_the_pool_and_at_least_one_connection() -> None:
    assert [new_call_share(n) for n in (1, 2, 3, 4, 10, 20, 100)] == [1, 1, 2, 3, 8, 15, 75]


async def test_new_calls_never_take_the_connections_kept_for_calls_placed(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_module, "QUEUE_WAIT_S", 0.5)
    store = await PostgresCallStore.open(postgres_dsn, pool_size=POOL)

    async def admission_read(n: int) -> None:
        with asking_for_a_new_call():
            assert await store.get_call(f"call-new-{n}") is None

    try:
        async with calls_table_locked(postgres_dsn):
            # New calls' admissions, each waiting on the lock with a connection of the pool.
            holding = [asyncio.create_task(admission_read(n)) for n in range(new_call_share(POOL))]
            await asyncio.sleep(0.2)
            # One more is refused (503, nothing run) rather than take the last connection...
            async with asyncio.timeout(5):  # QUEUE_WAIT_S, not the lock's 10 s
                with pytest.raises(DatabaseStalled):
                    await admission_read(99)
            # ... which the work of a call already placed gets at once.
            async with asyncio.timeout(5):
                assert await store.count_pending_deliveries() == 0
            assert not any(task.done() for task in holding)
        await asyncio.gather(*holding)  # they ran once the lock went
        # Every connection of the share was given back.
        await asyncio.gather(*(admission_read(n) for n in range(2 * POOL)))
    finally:
        await store.close()
