"""The LLM's detected_answering_machine before add_to_do_not_call in one reply: the call's
outcome.

b9183b7 kept the voicemail message from the person who asked not to be called when the
voicemail tool came first in the reply, but left its outcome, already sent to LiveKit, as it
was (test_HA_end_call_dnc_voicemail: "left as it is"). The room's last outcome stayed
`voicemail`: the call of a person who had just asked not to be called settled `voicemail`,
reason "answering machine" (GET /calls/{id}, call.ended), its analysis skipped as a machine's,
and a campaign retrying voicemail took it for one. README says a do-not-call request keeps
the voicemail tool out. Now the request takes the outcome back (OUTCOME_NONE), whether it ran
while the voicemail outcome went to LiveKit or after; the call settles `completed`."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest

from agent.results import CallEnd
from agent.session import build_agent
from agent.worker import JobCallControl
from common.calls.outcomes import CallState, Change, Signal, Status, next_state
from common.config_store.model import CallOptions, VoicemailPolicy
from common.contracts import OUTCOME_NONE
from tests.unit.test_agent_conversation import (
    FakeCallControl,
    ScriptedLLM,
    alice_plan,
    said_until_hung_up,
)
from tests.unit.test_voicemail_tool_as_the_call_ends import MESSAGE, calls

HEARD = "Please take me off your list, bye."
GOODBYE = "Sorry for the trouble, goodbye."
TOOLS = ("end_call", "add_to_do_not_call", "detected_answering_machine")


class LiveKitPaced(FakeCallControl):
    """Records an outcome as LiveKit does: after a request's round trip."""

    def __init__(self, delay_s: float = 0.05) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def set_outcome(self, outcome: str) -> None:
        await asyncio.sleep(self.delay_s)
        await super().set_outcome(outcome)


def last_outcome(control: FakeCallControl) -> str | None:
    outcomes = [action[1] for action in control.actions if action[0] == "set_outcome"]
    return outcomes[-1] if outcomes else None


@pytest.mark.parametrize("delay_s", [0.0, 0.05], ids=["at once", "LiveKit's pace"])
@pytest.mark.parametrize("order", list(itertools.permutations(TOOLS)), ids="-".join)
async def test_a_do_not_call_request_leaves_no_voicemail_outcome(
    order: tuple[str, ...], delay_s: float
) -> None:
    control = LiveKitPaced(delay_s)
    llm = ScriptedLLM(
        {
            HEARD: ("", calls(*order)),
            "tool:end_call": (GOODBYE, []),
            "tool:add_to_do_not_call": (GOODBYE, []),
        }
    )
    agent = build_agent(alice_plan(), control)

    await said_until_hung_up(agent, llm, HEARD, linger_s=0.2)

    assert ("do_not_call",) in control.actions
    assert last_outcome(control) in (None, OUTCOME_NONE), control.actions
    assert not agent.reached_machine
    assert control.actions.count(("hang_up",)) == 1
    assert control.actions[-1] == ("hang_up",)


async def test_a_do_not_call_request_after_the_outcome_was_recorded_takes_it_back() -> None:
    """The voicemail tool's outcome already on the room when the request runs (its reply's
    second tool call streamed later than LiveKit answered): taken back all the same, and the
    voicemail message it began is stopped."""
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=MESSAGE))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    control = FakeCallControl()  # recorded at once: before add_to_do_not_call runs
    llm = ScriptedLLM(
        {
            HEARD: ("", calls("detected_answering_machine", "add_to_do_not_call")),
            "tool:add_to_do_not_call": (GOODBYE, []),
        }
    )
    agent = build_agent(plan, control)

    messages = await said_until_hung_up(agent, llm, HEARD, linger_s=0.2)

    assert ("do_not_call",) in control.actions
    assert last_outcome(control) == OUTCOME_NONE, control.actions
    assert not agent.reached_machine
    # The message, begun before the request ran, is not read on to the person who asked;
    # the line closes after the request's reply (it was read whole, then the goodbye).
    assert MESSAGE not in messages
    assert messages[-1] == GOODBYE
    assert control.actions.count(("hang_up",)) == 1
    assert control.actions[-1] == ("hang_up",)


class TakingBackFails(LiveKitPaced):
    async def set_outcome(self, outcome: str) -> None:
        await super().set_outcome(outcome)
        if outcome == OUTCOME_NONE:
            raise ConnectionError("LiveKit is away")


async def test_a_taking_back_that_fails_says_which_outcome(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its ERROR named a blank outcome ('could not record the outcome ')."""
    control = TakingBackFails()
    llm = ScriptedLLM(
        {
            HEARD: ("", calls("detected_answering_machine", "add_to_do_not_call")),
            "tool:add_to_do_not_call": (GOODBYE, []),
        }
    )
    agent = build_agent(alice_plan(), control)

    await said_until_hung_up(agent, llm, HEARD)

    said = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert said == [
        f"call {agent.plan.call_id}: could not record the outcome none (the voicemail taken back)"
    ]
    assert control.actions[-1] == ("hang_up",)


async def test_the_voicemail_tool_alone_still_records_voicemail() -> None:
    control = LiveKitPaced()
    greeting = "Leave a message after the tone."
    llm = ScriptedLLM({greeting: ("", calls("detected_answering_machine"))})
    agent = build_agent(alice_plan(), control)

    await said_until_hung_up(agent, llm, greeting)

    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
    assert agent.reached_machine


async def test_the_job_takes_the_withdrawn_outcome_for_none(monkeypatch: Any) -> None:
    """The job's CallEnd: no outcome decided (its analysis runs; a failure after it is the
    call's own, not kept under `voicemail`), and the room's metadata read back as none."""
    written: list[str] = []

    async def record(_ctx: object, _room: str, outcome: str, *_: object, **__: object) -> None:
        written.append(outcome)

    monkeypatch.setattr("agent.worker.record_outcome", record)
    end = CallEnd()
    control = JobCallControl(object(), "call-1", end)  # type: ignore[arg-type]
    decided = []
    for outcome in ("voicemail", OUTCOME_NONE):
        await control.set_outcome(outcome)
        decided.append(end.outcome)
    assert decided == ["voicemail", None]
    assert written == ["voicemail", OUTCOME_NONE]

    answered = CallState(Status.IN_PROGRESS, answered=True)
    finished = Signal("room_finished", "call-1", room_outcome=OUTCOME_NONE)
    assert next_state(answered, finished) == Change(Status.COMPLETED)
