"""next_state for an answered call no agent showed itself in (CallState.agent_seen False):
its room's end waits out the grace, which settles it failed; an agent seen, completed."""

from __future__ import annotations

from common.calls.outcomes import (
    GRACE_OVER,
    NO_AGENT_BEFORE_END,
    CallState,
    Change,
    Signal,
    Status,
    next_state,
)

CALL = "call-0000000fg002"
ANSWERED = CallState(Status.IN_PROGRESS, answered=True, agent_seen=False)
FINISHED = Signal("room_finished", CALL)
GRACE = Signal(GRACE_OVER, CALL)


def test_an_answered_call_with_no_agent_waits_out_its_rooms_grace() -> None:
    assert next_state(ANSWERED, FINISHED) is None
    assert next_state(ANSWERED, GRACE) == Change(Status.FAILED, NO_AGENT_BEFORE_END, no_report=True)


def test_an_agent_seen_completes_it_as_before() -> None:
    seen = CallState(Status.IN_PROGRESS, answered=True)
    assert next_state(seen, FINISHED) == Change(Status.COMPLETED)
    assert next_state(seen, GRACE) == Change(Status.COMPLETED)


def test_an_answer_shown_after_the_room_finished_waits_for_the_grace_too() -> None:
    state = CallState(Status.DIALING, room_finished=True, agent_seen=False)
    left = Signal("participant_left", CALL, sip_participant=True, sip_call_status="hangup")
    assert next_state(state, left) == Change(Status.IN_PROGRESS, answered=True)
    seen = CallState(Status.DIALING, room_finished=True)
    change = next_state(seen, left)
    assert change is not None and change.status is Status.COMPLETED


def test_a_machine_verdict_or_an_api_hang_up_still_decide_first() -> None:
    machine = CallState(Status.IN_PROGRESS, answered=True, amd="machine-vm", agent_seen=False)
    change = next_state(machine, FINISHED)
    assert change is not None and change.status is Status.VOICEMAIL
    hung_up = CallState(Status.IN_PROGRESS, answered=True, hangup_requested=True, agent_seen=False)
    change = next_state(hung_up, FINISHED)
    assert change is not None and change.status is Status.CANCELED
