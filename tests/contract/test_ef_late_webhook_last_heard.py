"""When the server last heard of a call (the reaper ends a call whose room_finished was lost
then: its talk_s runs to it), with LiveKit's webhooks retried after a restart: each is heard
when it happened (its createdAt, bounded by its arrival), as an agent's retried report is,
not at its late arrival, which counted the restart as talk."""

from __future__ import annotations

from common.calls.models import NewCall
from common.calls.outcomes import Signal, next_state
from common.contracts import AgentReport, TranscriptTurn
from common.storage.base import CallStore
from tests.helpers import FakeClock

CALL = "call-00000000ef01"


async def test_a_webhook_retried_after_a_restart_is_heard_when_it_happened(
    store: CallStore, clock: FakeClock
) -> None:
    """The server stopped a second after the dial and was back 40 s later. The callee had
    answered 3 s after the dial (LiveKit's webhook showing it, SIP callStatus `active`, was
    retried until the server was back) and said goodbye 8 s into the call (the agent's turn,
    retried too); the room's room_finished was given up meanwhile. The webhook's timeline
    line, dated at its arrival, was the call's last sign: the reaper ended the call 40 s
    after its dial, talk_s 37 for an 8 s call."""
    await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    dialled = clock.now
    clock.advance(40)  # back: LiveKit's retried webhook and the agent's retried reports
    active = Signal("track_published", CALL, sip_participant=True, sip_call_status="active")
    shown = await store.apply(
        CALL,
        "track_published",
        lambda state: next_state(state, active),
        event_id="EV_ef_late_answer",
        event_at=float(int(dialled + 3)),  # LiveKit's createdAt, whole seconds
    )
    assert shown.after is not None and shown.after.answered_at is not None
    assert shown.after.answered_at <= dialled + 4
    goodbye = TranscriptTurn(role="agent", text="Goodbye!", at_s=8.0)
    await store.record_reports(
        [AgentReport(call_id=CALL, seq=0, kind="turn", at=dialled + 11, turn=goodbye)]
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == dialled + 11  # not the webhook's arrival, dialled + 40


async def test_a_webhook_on_time_is_heard_at_its_arrival(
    store: CallStore, clock: FakeClock
) -> None:
    """A webhook that comes on time, if a second or two after its createdAt (LiveKit's
    queue), is heard when it came: the timeline's lines keep their order of arrival, and
    the last sign of a call is not moved back by LiveKit's whole seconds."""
    await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    clock.advance(3.6)
    arrived = clock.now
    active = Signal("track_published", CALL, sip_participant=True, sip_call_status="active")
    await store.apply(
        CALL,
        "track_published",
        lambda state: next_state(state, active),
        event_id="EV_ef_on_time",
        event_at=float(int(arrived) - 1),  # 1.6 s before its arrival, at the most
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == arrived


async def test_an_agent_leaving_retried_after_a_restart_keeps_its_arrival(
    store: CallStore, clock: FakeClock
) -> None:
    """An agent's participant_left that came late starts the wait for its room_finished
    (retried by LiveKit too) from its arrival: dated when it happened, any server's reaper
    would end the call as its agent's gone at once, before that room_finished could land."""
    from common.storage.programs import AGENT_LEFT_DETAIL

    await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    dialled = clock.now
    clock.advance(40)  # back: LiveKit's retried webhooks come in
    agent_left = Signal("participant_left", CALL)
    await store.apply(
        CALL,
        "participant_left",
        lambda state: next_state(state, agent_left),
        event_id="EV_ef_agent_left",
        detail={AGENT_LEFT_DETAIL: True},
        event_at=float(int(dialled + 9)),
    )
    assert await store.agent_gone_unsettled(clock.now - 5, None) == []
    clock.advance(6)
    assert await store.agent_gone_unsettled(clock.now - 5, None) == [CALL]
