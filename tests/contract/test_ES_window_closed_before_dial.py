"""A campaign call's dial is marked only while its recipient's calling window is open (asked
in the transaction that marks it, as the pause and the do-not-call list are): one whose
window closed while it was being placed is not marked, and its attempt ends not_dialled,
counted towards nothing, the recipient waiting for the window's next opening."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.calls.outcomes import Status
from common.storage import campaign_programs as cp
from common.storage.base import CallStore, WindowClosed
from common.storage.campaign_programs import OnList
from tests.contract.test_campaign_store import campaign, place, settle
from tests.helpers import FakeClock

DAY_S = 86_400.0
# The FakeClock starts at 14:13 in California (the recipients' zone; the window is the
# default 09:00-20:00 there): 20:00:05 that evening, and 09:00 the next morning.
CLOSED = datetime(2023, 11, 15, 4, 0, 5, tzinfo=UTC).timestamp()
OPENS = datetime(2023, 11, 15, 17, 0, tzinfo=UTC).timestamp()


async def test_a_dial_whose_window_closed_is_not_marked_and_waits_for_the_window(
    store: CallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Withdrawn as the window closed, day after day, more often than LiveKit may refuse a
    dial (MAX_NOT_DIALLED, 2 here): the recipient is never failed, and is called once its
    window is open as its dial is marked."""
    monkeypatch.setattr(cp, "MAX_NOT_DIALLED", 2)
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    for day in range(3):
        plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
        assert plan is not None and not isinstance(plan, OnList)
        call_id = f"call-{day}"
        await place(store, plan, call_id, dialled=False)
        clock.now = CLOSED + day * DAY_S  # the placing took past 20:00
        with pytest.raises(WindowClosed):
            await store.start_dial(call_id, lambda: False)
        call = await store.get_call(call_id)
        assert call is not None and call.dial_started_at is None
        await store.apply(call_id, cp.WINDOW_CLOSED_BEFORE_DIAL, settle(Status.FAILED))  # type: ignore[arg-type]
        await store.finish_call_attempt(call_id, Status.FAILED.value, clock.now)
        (row,) = await store.list_recipients("cmp-1", state=None, limit=1, after=None)
        assert (row.state, row.next_at) == ("waiting_window", OPENS + day * DAY_S)
        assert [a.status for a in row.history] == ["not_dialled"] * (day + 1)
        clock.now = row.next_at
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert plan is not None and not isinstance(plan, OnList) and plan.attempt == 4
    await place(store, plan, "call-open", dialled=False)
    marked = await store.start_dial("call-open", lambda: True)
    assert marked is not None and marked.dial_started_at == clock.now
