"""The LLM's end_call and detected_answering_machine in one reply, end_call first.

37e5d4b stopped taking the voicemail tool once the call is ending (for a do-not-call request
in the same reply, or the tool called twice). That also covered end_call called first: the
LLM that heard a voicemail greeting and ended the call on it got a call settled `completed`
with no reason (a campaign retrying voicemail did not call again); before 37e5d4b, `voicemail`
(GV's finding). Now the outcome is recorded and the line closes after end_call's goodbye, with
no voicemail message begun over it; past VOICEMAIL_TOOL_WINDOW_S it is not taken."""

from __future__ import annotations

import dataclasses
import time

import pytest

from agent import caller
from agent.session import build_agent
from common.config_store.model import CallOptions, VoicemailPolicy
from tests.unit.test_agent_conversation import (
    FakeCallControl,
    ScriptedLLM,
    alice_plan,
    said_until_hung_up,
)
from tests.unit.test_voicemail_tool_as_the_call_ends import MESSAGE, calls

HEARD = "You have reached Alice. Please leave a message after the tone."
GOODBYE = "Goodbye."


async def said_on_end_call_then_voicemail(
    control: FakeCallControl, *, greeted_s_ago: float | None = None
) -> list[str]:
    """What the agent said, the LLM calling end_call then the voicemail tool in one reply."""
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=MESSAGE))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    llm = ScriptedLLM(
        {
            HEARD: ("", calls("end_call", "detected_answering_machine")),
            "tool:end_call": (GOODBYE, []),
        }
    )
    agent = build_agent(plan, control)

    def started() -> None:
        if greeted_s_ago is not None:
            agent._greeted_at = time.monotonic() - greeted_s_ago

    return await said_until_hung_up(agent, llm, HEARD, started)


async def test_end_call_then_the_voicemail_tool_records_voicemail_without_the_message() -> None:
    control = FakeCallControl()
    messages = await said_on_end_call_then_voicemail(control)

    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
    assert MESSAGE not in messages  # not begun over end_call's goodbye


async def test_past_the_window_end_call_then_the_voicemail_tool_is_a_plain_end() -> None:
    control = FakeCallControl()
    late = caller.VOICEMAIL_TOOL_WINDOW_S + 5
    messages = await said_on_end_call_then_voicemail(control, greeted_s_ago=late)

    assert control.actions == [("hang_up",)]
    assert MESSAGE not in messages


@pytest.mark.parametrize("first", ["add_to_do_not_call", "detected_answering_machine"])
async def test_other_tools_first_still_keep_the_voicemail_tool_out(first: str) -> None:
    """Unchanged: a do-not-call request, or the voicemail tool already taken, first."""
    control = FakeCallControl()
    plan = alice_plan()
    llm = ScriptedLLM({HEARD: ("", calls(first, "end_call", "detected_answering_machine"))})
    agent = build_agent(plan, control)
    await said_until_hung_up(agent, llm, HEARD)

    assert control.actions.count(("set_outcome", "voicemail")) == (
        1 if first == "detected_answering_machine" else 0
    )
    assert control.actions[-1] == ("hang_up",)
