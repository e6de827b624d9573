"""PostgreSQL: an attempt given back (a limit's refusal, the recovery pass) or ended before
its call was recorded (do-not-call, invalid), and a cancel of its campaign, at once, do not
deadlock."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from common.calls.models import AttemptRef
from common.storage.base import CallStore
from common.storage.campaign_programs import OnList
from common.storage.postgres import PostgresCallStore
from tests.contract.test_campaign_store import campaign, cancel_racing
from tests.helpers import FakeClock

REF = AttemptRef("cmp-1", 0, 1)


async def _give_back(store: CallStore, now: float) -> None:
    await store.attempt_refused(REF, now + 5, now)


async def _end(store: CallStore, now: float) -> None:
    await store.end_attempt(REF, "dnc", now)


OPERATIONS: dict[str, Callable[[CallStore, float], Coroutine[Any, Any, None]]] = {
    "given back": _give_back,
    "ended": _end,
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_an_attempt_given_back_or_ended_and_a_cancel_at_once_do_not_deadlock(
    postgres_dsn: str, clock: FakeClock, operation: str
) -> None:
    """attempt_refused (and end_attempt) locked the attempt, then its recipient, then its
    campaign; a cancel locks the campaign, then the attempts being placed. A cancel waiting
    for the campaign's row (held a moment by another write) and a refusal of one of its
    attempts meanwhile: PostgreSQL broke the deadlock with an error (the cancel answered 503,
    or the refusal left unrecorded). Both now lock the campaign first."""
    store = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=6)
    try:
        await store.create_campaign(campaign(3), clock.now, start_now=True)
        await store.claim_campaigns(clock.now, 10.0, 10)
        plan = await store.begin_attempt("cmp-1", 0, clock.now + 1, clock.now)
        assert plan is not None and not isinstance(plan, OnList)
        canceled, refused = await cancel_racing(
            postgres_dsn, store, lambda: OPERATIONS[operation](store, clock.now)
        )
        assert not isinstance(canceled, BaseException), canceled
        assert not isinstance(refused, BaseException), refused
        assert canceled[0] is not None and canceled[0].counts == {"canceled": 3}
    finally:
        await store.close()
