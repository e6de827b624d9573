"""pull_back_deliveries: after the server's clock stepped back, the deliveries it dated by the
clock before the step (a retry's next attempt, its own claims) wait the step less, on each
backend (tests/integration/test_FT_webhook_retry_clock_back.py shows why)."""

from __future__ import annotations

import dataclasses

from common.calls.models import DeliveryOutcome
from common.storage.base import CallStore
from tests.contract.test_call_store import new_call
from tests.helpers import FakeClock

STEP_S = 3600.0


async def test_a_retry_and_a_claim_dated_before_a_step_back_are_pulled_back(
    store: CallStore, clock: FakeClock
) -> None:
    await store.create_call(dataclasses.replace(new_call(), webhook_url="https://example.com/h"))
    (first,) = await store.claim_due_deliveries(clock.now, 20, 10)
    retry = DeliveryOutcome("pending", 503, "HTTP 503", clock.now + 5)
    await store.record_delivery(first.id, retry)
    clock.advance(-STEP_S)  # the clock steps back an hour
    assert await store.next_delivery_at(unclaimed_at=clock.now) == clock.now + STEP_S + 5
    assert await store.pull_back_deliveries(clock.now, STEP_S) == 1
    assert await store.next_delivery_at(unclaimed_at=clock.now) == clock.now + 5
    clock.advance(5)
    (again,) = await store.claim_due_deliveries(clock.now, 20, 10)
    assert again.id == first.id
    clock.advance(-STEP_S)  # again, while it is claimed: its claim is pulled back too
    assert await store.pull_back_deliveries(clock.now, STEP_S) == 1  # due now, not later
    assert await store.next_delivery_at(unclaimed_at=clock.now) == clock.now + 20
