"""An undispatched event taken over MAX_TAKEOVERS times is given up on each store: kept in the
outbox, undispatched, never claimed again, said once; the others are taken over as before."""

from __future__ import annotations

import logging

import pytest

from common.calls.events import MAX_TAKEOVERS
from common.storage.base import CallStore
from common.storage.programs import GIVEN_UP_UNTIL
from tests.contract.test_call_store import new_call
from tests.contract.test_report_store import execute
from tests.helpers import FakeClock


async def test_an_event_taken_over_too_often_is_given_up_and_kept(
    store: CallStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    bad = (await store.create_call(new_call("call-bad"))).events[0].id
    good = (await store.create_call(new_call("call-good", "+1234567891"))).events[0].id
    await execute(store, "UPDATE outbox SET takeovers = ? WHERE id = ?", MAX_TAKEOVERS - 1, bad)
    taken = []
    for _ in range(3):
        clock.advance(61)  # each claim runs out
        taken.append([e.id for e in await store.claim_stale_events(clock.now, 60.0, 10)])
    assert taken == [[bad, good], [good], [good]]  # its tenth take-over, then none
    rows = await execute(
        store,
        "SELECT dispatched_at, given_up_at, takeovers, claimed_until FROM outbox WHERE id = ?",
        bad,
    )
    assert dict(rows[0]) == {
        "dispatched_at": None,
        "given_up_at": clock.now - 61,
        "takeovers": MAX_TAKEOVERS + 1,
        # out of the claims run out that each take-over reads (it read past every one kept)
        "claimed_until": GIVEN_UP_UNTIL,
    }
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and said[0].startswith(f"event {bad} (call.dialing, call-bad) given up")
    # What the line says to do once its subscriber is mended has it taken over again.
    statement = said[0].split("Once that is mended, ")[1].split(" dispatches it again")[0]
    await execute(store, statement.replace("<its id>", "?"), bad)
    clock.advance(61)
    assert [e.id for e in await store.claim_stale_events(clock.now, 60.0, 10)] == [bad, good]


async def test_the_claims_of_events_still_held_are_renewed_not_taken_over(
    store: CallStore, clock: FakeClock
) -> None:
    """A server's dispatcher still holding events (queued behind a slow subscriber) took them
    over itself once their claims ran out, each lease, counting each time."""
    held = (await store.create_call(new_call("call-held"))).events[0].id
    other = (await store.create_call(new_call("call-other", "+1234567891"))).events[0].id
    clock.advance(61)  # both claims ran out
    taken = await store.claim_stale_events(clock.now, 60.0, 10, held=[held])
    assert [e.id for e in taken] == [other]
    rows = await execute(store, "SELECT takeovers, claimed_until FROM outbox WHERE id = ?", held)
    assert dict(rows[0]) == {"takeovers": 0, "claimed_until": clock.now + 60.0}
    clock.advance(61)  # no longer held (its dispatcher gave up on it): taken over, counted
    assert [e.id for e in await store.claim_stale_events(clock.now, 60.0, 10)] == [held, other]
