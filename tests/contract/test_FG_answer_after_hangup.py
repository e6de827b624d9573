"""The agent's answer report, held up by an outage, coming after the LiveKit webhook that
showed the answer (the callee's participant_left, its last sip.callStatus `hangup`): the
webhook dated the answer no later than itself, the hang-up; the report says when it was."""

from __future__ import annotations

from common.calls.models import NewCall
from common.calls.outcomes import Signal, next_state
from common.contracts import AgentReport
from common.storage.base import CallStore
from tests.helpers import FakeClock

CALL = "call-0000000fg001"


async def _hung_up(store: CallStore, clock: FakeClock) -> float:
    """A call dialled now, answered 3 s later and hung up 40 s after its dial; the server
    was away from 1 s to 60 s, and LiveKit's retried webhooks come back first. The dial's
    time."""
    await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    dialled = clock.now
    clock.advance(60)
    left = Signal(
        "participant_left",
        CALL,
        sip_participant=True,
        sip_call_status="hangup",
        disconnect_reason="CLIENT_INITIATED",
    )
    await store.apply(
        CALL,
        "participant_left",
        lambda state: next_state(state, left),
        event_id="EV_fg_left",
        callee_left=True,
        event_at=float(int(dialled + 40)),
    )
    finished = Signal("room_finished", CALL)
    await store.apply(
        CALL,
        "room_finished",
        lambda state: next_state(state, finished),
        event_id="EV_fg_finished",
        room_finished=True,
        event_at=float(int(dialled + 40)),
    )
    return dialled


async def test_an_answer_reported_after_the_hangup_webhook_dates_the_answer(
    store: CallStore, clock: FakeClock
) -> None:
    """Shown before: answered_at at the hang-up, ring_s 41 and talk_s 0 for a call that
    rang 3 s and talked 37."""
    dialled = await _hung_up(store, clock)
    ended = await store.get_call(CALL)
    assert ended is not None and ended.status.value == "completed"
    assert ended.talk_s == 0.0  # all the webhook could say
    answer = AgentReport(call_id=CALL, seq=0, kind="answered", at=dialled + 3)
    await store.record_reports([answer])
    call = await store.get_call(CALL)
    assert call is not None and call.status.value == "completed"
    assert call.answered_at == dialled + 3
    assert call.ring_s == 3.0
    assert call.talk_s is not None and 36.0 <= call.talk_s <= 38.0
    assert call.ended_at == ended.ended_at  # the end stands


async def test_an_answer_reported_later_than_the_webhooks_moves_nothing(
    store: CallStore, clock: FakeClock
) -> None:
    """A report whose time is after the answer already known (the agent's clock ahead, or a
    report sent late) never moves the answer later, nor past the call's end."""
    dialled = await _hung_up(store, clock)
    ended = await store.get_call(CALL)
    assert ended is not None and ended.answered_at is not None
    late = AgentReport(call_id=CALL, seq=0, kind="answered", at=dialled + 50)
    await store.record_reports([late])
    call = await store.get_call(CALL)
    assert call is not None and call.answered_at == ended.answered_at
