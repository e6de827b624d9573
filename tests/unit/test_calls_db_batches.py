"""The calls database's worker runs queued calls in batches: each caller still gets its own
answer (or error), in order, and a caller that gives up changes nothing for the others."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.calls_db import CallsDB, DatabaseError, NewCall
from common.outcomes import CallState, Change, Status


def new_call(n: int) -> NewCall:
    return NewCall(f"call-{n:012d}", "+1234567890", f"Caller {n}", "en", "Calm")


async def test_concurrent_calls_each_get_their_own_answer(tmp_path: Path) -> None:
    db = await CallsDB.open(tmp_path / "calls.db")
    try:
        await asyncio.gather(*(db.insert_call(new_call(n)) for n in range(60)))
        calls = await asyncio.gather(*(db.get_call(f"call-{n:012d}") for n in range(60)))
        assert [c.caller_name if c else None for c in calls] == [f"Caller {n}" for n in range(60)]
        assert await db.count_live() == 60
    finally:
        await db.close()


async def test_a_failing_call_in_a_batch_fails_alone(tmp_path: Path) -> None:
    db = await CallsDB.open(tmp_path / "calls.db")
    try:
        await db.insert_call(new_call(1))

        def boom(_state: CallState) -> Change:
            raise ValueError("no decision")

        results = await asyncio.gather(
            db.apply("call-000000000001", "a", lambda _s: Change(Status.RINGING), event_id="e1"),
            db.apply("call-000000000001", "b", boom, event_id="e2"),
            db.insert_call(new_call(1)),  # duplicate key: a sqlite error
            db.apply("call-000000000001", "c", lambda _s: None, event_id="e3"),
            return_exceptions=True,
        )
        assert not isinstance(results[0], BaseException) and results[0].change is not None
        assert isinstance(results[1], ValueError)
        assert isinstance(results[2], DatabaseError)
        assert not isinstance(results[3], BaseException) and results[3].change is None
        call = await db.get_call("call-000000000001")
        assert call is not None and call.status is Status.RINGING
        assert [e.kind for e in call.timeline] == ["created", "a", "c"]
    finally:
        await db.close()


async def test_a_cancelled_caller_leaves_the_others_alone(tmp_path: Path) -> None:
    db = await CallsDB.open(tmp_path / "calls.db")
    try:
        first = asyncio.ensure_future(db.insert_call(new_call(1)))
        second = asyncio.ensure_future(db.insert_call(new_call(2)))
        await asyncio.sleep(0)
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await db.get_call("call-000000000002") is not None
        assert await db.count_live() in (1, 2)  # the cancelled insert may have run already
    finally:
        await db.close()
    with pytest.raises(DatabaseError):
        await db.count_live()
