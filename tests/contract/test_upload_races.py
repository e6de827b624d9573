"""Races between servers on one PostgreSQL around campaign uploads (review AT)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from common.storage import campaign_programs as cp
from common.storage.postgres import PostgresCallStore, numbered
from tests.contract.test_campaign_store import campaign
from tests.helpers import FakeClock


async def _drive(conn: Any, program: Any) -> Any:
    """Run a program on a raw connection (in the caller's transaction)."""
    try:
        query = next(program)
        while True:
            rows = await conn.fetch(numbered(query.sql), *query.args)
            query = program.send(rows)
    except StopIteration as done:
        return done.value


async def _left(conn: Any, campaign_id: str) -> tuple[int, int]:
    recipients = await conn.fetchval(
        "SELECT COUNT(*) FROM campaign_recipients WHERE campaign_id = $1", campaign_id
    )
    uploads = await conn.fetchval(
        "SELECT COUNT(*) FROM campaign_uploads WHERE campaign_id = $1", campaign_id
    )
    return recipients, uploads


async def _given_up_upload(store: PostgresCallStore, clock: FakeClock, rows: int) -> str:
    new = campaign(rows, campaign_id="cmp-failed")
    for first in range(0, rows, cp.STAGE_ROWS):
        stage = cp.stage_recipients(
            store.dialect,
            new,
            first,
            clock.now,
            clock.now,
            live_after=clock.now - cp.UPLOAD_GIVEN_UP_S,
        )
        await store._run(stage, write=True)
    await store._run(cp.give_up_upload(store.dialect, new.campaign_id), write=True)
    return new.campaign_id


async def test_two_reapers_on_one_given_up_upload_never_orphan_its_rows(
    postgres_dsn: str,
) -> None:
    """Two servers' reaper passes overlap on the same given-up upload: the second's DELETE
    waits for the first's row locks, then finds its rows gone (0 < limit) and removes the
    upload's mark while 1,000 rows are left: nobody ever removes them."""
    clock = FakeClock()
    a = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=4)
    b = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=4)
    conn = await asyncpg.connect(postgres_dsn)
    try:
        campaign_id = await _given_up_upload(a, clock, 3000)
        before = clock.now - cp.UPLOAD_GIVEN_UP_S
        tx = conn.transaction()
        await tx.start()  # server A's reaper, mid-transaction (1,000 rows deleted, locked)
        assert await _drive(conn, cp.discard_given_up_upload(a.dialect, before, 1000)) == 1000
        other = asyncio.create_task(b.discard_given_up_upload(before, 1000))  # server B's
        await asyncio.sleep(0.5)
        await tx.commit()
        await other
        for _ in range(10):  # later passes remove the rest
            if await a.discard_given_up_upload(before, 1000) == 0:
                break
        assert await _left(conn, campaign_id) == (0, 0), "rows left with no upload to own them"
    finally:
        await conn.close()
        await a.close()
        await b.close()


async def test_a_reaper_never_removes_rows_of_a_campaign_that_is_then_created(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Server B (its clock 601 s ahead) takes A's live upload for stale between two of its
    batches and removes a full batch of its rows, the upload's mark staying: A went on and
    created the campaign (total 3,000, 2,000 recipients, no error anywhere). Now the mark
    is set to 0 as B takes it, and A's next batch is refused (UploadGivenUp, a 503)."""
    clock_a, clock_b = FakeClock(), FakeClock()
    clock_b.advance(cp.UPLOAD_GIVEN_UP_S + 1)
    a = await PostgresCallStore.open(postgres_dsn, clock=clock_a, pool_size=4)
    b = await PostgresCallStore.open(postgres_dsn, clock=clock_b, pool_size=4)
    conn = await asyncpg.connect(postgres_dsn)
    reaped: list[int] = []

    async def reap_between() -> None:
        reaped.append(await b.discard_given_up_upload(clock_b.now - cp.UPLOAD_GIVEN_UP_S, 1000))

    real_run = a._run

    async def run(program: Any, *, write: bool) -> Any:
        if getattr(program, "gi_frame", None) and program.gi_frame.f_locals.get("first") == 2000:
            await reap_between()
        return await real_run(program, write=write)

    monkeypatch.setattr(a, "_run", run)
    try:
        failed: Exception | None = None
        try:
            await a.create_campaign(campaign(3000, campaign_id="cmp-live"), clock_a.now)
        except Exception as exc:  # noqa: BLE001
            failed = exc
        assert reaped == [1000]
        total = await conn.fetchval("SELECT total FROM campaigns WHERE campaign_id = 'cmp-live'")
        stored, _ = await _left(conn, "cmp-live")
        assert failed is not None or total == stored, (failed, total, stored)
    finally:
        await conn.close()
        await a.close()
        await b.close()


async def test_two_servers_creating_under_one_key_at_once(postgres_dsn: str) -> None:
    """The same Idempotency-Key on two servers at once: one campaign, the other KeyTaken,
    its staged rows given up and removed."""
    from common.calls.models import IdempotencyClaim
    from common.storage.base import KeyTaken

    clock = FakeClock()
    a = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=4)
    b = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=4)
    conn = await asyncpg.connect(postgres_dsn)
    claim = IdempotencyClaim("client-a", "key-1", "h1")
    try:
        results = await asyncio.gather(
            a.create_campaign(campaign(2500, campaign_id="cmp-a"), clock.now, claim, {}),
            b.create_campaign(campaign(2500, campaign_id="cmp-b"), clock.now, claim, {}),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["KeyTaken", "list"], results
        assert sum(isinstance(r, KeyTaken) for r in results) == 1
        while await a.discard_given_up_upload(clock.now - cp.UPLOAD_GIVEN_UP_S, 1000):
            pass
        left = await conn.fetch(
            "SELECT campaign_id, COUNT(*) AS n FROM campaign_recipients GROUP BY campaign_id"
        )
        assert [tuple(r) for r in left] in ([("cmp-a", 2500)], [("cmp-b", 2500)]), left
        assert await conn.fetchval("SELECT COUNT(*) FROM campaign_uploads") == 0
    finally:
        await conn.close()
        await a.close()
        await b.close()


async def test_a_commit_unknown_that_committed_keeps_every_recipient(
    store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The campaign's own transaction commits but its answer is lost (CommitUnknown): the
    give-up that follows finds no upload to mark; the reaper never touches its rows."""
    from common.storage.base import CommitUnknown

    real_end = store._run_to_its_end

    async def run_to_its_end(program: Any) -> Any:  # how the campaign's own write is run
        result = await real_end(program)
        if program.gi_code.co_name == "create_campaign":
            raise CommitUnknown("connection lost while committing")
        return result

    monkeypatch.setattr(store, "_run_to_its_end", run_to_its_end)
    with pytest.raises(CommitUnknown):
        await store.create_campaign(campaign(2500, campaign_id="cmp-x"), clock.now)
    clock.advance(cp.UPLOAD_GIVEN_UP_S + 1)
    assert await store.discard_given_up_upload(clock.now - cp.UPLOAD_GIVEN_UP_S, 5000) == 0
    got = await store.get_campaign("cmp-x")
    assert got is not None and got.total == 2500 and sum(got.counts.values()) == 2500
