"""When the server last heard of a call whose webhooks were lost: the reaper ends such a call
then (its talk_s runs to it). An agent's reports refused while the server was down (a restart
mid-call) are retried and arrive after it is back: each is heard at when it happened, by the
report's own time, not at its late arrival (the restart's length was counted as talk)."""

from __future__ import annotations

from common.calls.models import NewCall
from common.contracts import AgentReport, AmdVerdict, TranscriptTurn
from common.storage.base import CallStore
from tests.helpers import FakeClock

CALL = "call-00000000dx01"


async def test_reports_retried_after_a_restart_are_heard_when_they_happened(
    store: CallStore, clock: FakeClock
) -> None:
    """Seen live: a call on a LiveKit of its own, the server stopped 1.5 s after the answer
    and started again 11 s later, the callee's goodbye at 4.9 s; LiveKit gave up its
    room_finished meanwhile, the agent's last turn came with the restart, and the reaper
    ended the call at that turn's arrival: talk_s 12.5 for a 5 s call."""
    await store.create_call(NewCall(CALL, "+14155557750", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    clock.advance(0.3)
    answered = clock.now
    await store.record_reports([AgentReport(call_id=CALL, seq=0, kind="answered", at=answered)])
    clock.advance(1.5)  # the server stops; the verdict and the goodbye are refused meanwhile
    amd = AmdVerdict(category="human", reason="a person greeted")
    goodbye = TranscriptTurn(role="agent", text="Goodbye!", at_s=4.9)
    clock.advance(11)  # back: the agent's retries come in
    await store.record_reports(
        [
            AgentReport(call_id=CALL, seq=1, kind="amd", at=answered + 0.1, amd=amd),
            AgentReport(call_id=CALL, seq=2, kind="turn", at=answered + 4.9, turn=goodbye),
        ]
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == answered + 4.9


async def test_a_report_dated_ahead_of_its_arrival_is_heard_when_it_came(
    store: CallStore, clock: FakeClock
) -> None:
    """An agent whose clock runs ahead: its report cannot have happened after the server got
    it, so its arrival bounds it (else the call's end, and its talk_s, lay in the future)."""
    await store.create_call(NewCall(CALL, "+14155557750", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    clock.advance(1)
    answered = clock.now
    await store.record_reports([AgentReport(call_id=CALL, seq=0, kind="answered", at=answered)])
    clock.advance(5)
    arrived = clock.now
    turn = TranscriptTurn(role="callee", text="Bye", at_s=5.0)
    await store.record_reports(
        [AgentReport(call_id=CALL, seq=1, kind="turn", at=arrived + 300, turn=turn)]
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == arrived


async def test_an_answer_shown_by_a_late_webhook_is_no_later_than_that_webhook(
    store: CallStore, clock: FakeClock
) -> None:
    """Seen live: the server stopped a second after a dial, started again 40 s later, and
    LiveKit's retried participant_left (its SIP callStatus `hangup`: the callee had answered,
    then hung up, 11 s after the dial by LiveKit's createdAt) was the first sign of the
    answer. The answer was dated at the webhook's arrival, after the callee's hang-up: ring_s
    read 41 s (the restart counted as ringing) for a line that rang 3 s."""
    from common.calls.outcomes import Signal, next_state

    await store.create_call(NewCall(CALL, "+14155557708", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    dialled = clock.now
    clock.advance(41)  # back; the webhooks LiveKit kept retrying come in
    hung_up = Signal(
        "participant_left",
        CALL,
        sip_participant=True,
        sip_call_status="hangup",
        disconnect_reason="CLIENT_INITIATED",
    )
    left = await store.apply(
        CALL,
        "participant_left",
        lambda state: next_state(state, hung_up),
        callee_left=True,
        event_at=dialled + 11,  # LiveKit's createdAt, whole seconds
    )
    assert left.after is not None and left.after.answered_at is not None
    assert left.after.answered_at <= dialled + 12  # not at its arrival, 41 s after the dial
    finished = Signal("room_finished", CALL)
    done = await store.apply(
        CALL,
        "room_finished",
        lambda state: next_state(state, finished),
        room_finished=True,
        event_at=dialled + 11,
    )
    assert done.after is not None and done.after.status.value == "completed"
    assert done.after.ring_s is not None and done.after.ring_s <= 12
    assert done.after.ended_at == dialled + 12


async def test_an_answer_reported_after_a_restart_is_heard_when_it_happened(
    store: CallStore, clock: FakeClock
) -> None:
    """The server stopped before the answer: the agent's answered report, retried, comes
    with its return, and the status change it makes is dated then. That change is the
    report's, heard at the report's own time; dated at its arrival, the restart was talk."""
    await store.create_call(NewCall(CALL, "+14155557750", "Bob", "en", "Calm"))
    await store.start_dial(CALL)
    dialled = clock.now
    clock.advance(40)  # back: the answer (3 s after the dial) and the last turn come in
    goodbye = TranscriptTurn(role="agent", text="Goodbye!", at_s=8.0)
    await store.record_reports(
        [
            AgentReport(call_id=CALL, seq=0, kind="answered", at=dialled + 3),
            AgentReport(call_id=CALL, seq=1, kind="turn", at=dialled + 11, turn=goodbye),
        ]
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == dialled + 11
