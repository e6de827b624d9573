"""An attempt left being placed is given back with its recipient due when it was."""

from __future__ import annotations

from common.calls.models import AttemptRef
from common.storage.base import CallStore
from common.storage.campaign_programs import OnList
from tests.contract.test_campaign_store import campaign
from tests.helpers import FakeClock


async def test_an_attempt_given_back_keeps_its_due_time(store: CallStore, clock: FakeClock) -> None:
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    due = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0].next_at
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert plan is not None and not isinstance(plan, OnList)
    clock.advance(40)  # a restart later
    await store.attempt_refused(AttemptRef("cmp-1", 0, 1), None, clock.now)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert (row.state, row.attempts, row.next_at, row.history) == ("pending", 0, due, ())
    again = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert again is not None and not isinstance(again, OnList) and again.attempt == 1
