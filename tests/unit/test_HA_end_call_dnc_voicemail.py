"""The LLM's end_call, add_to_do_not_call and detected_answering_machine in one reply, in
that order.

bbde216 made the voicemail tool after end_call in one reply record the call `voicemail` (the
LLM that heard a voicemail greeting and ended the call on it), and said that after a
do-not-call request it is still not taken. It was, when end_call came first: with end_call,
then add_to_do_not_call, then the voicemail tool in one reply, the room's outcome was set to
`voicemail` on the call of a person who had just asked not to be called (the call's report,
GET /calls/{id} and the call.report webhook said the call reached a machine, and the agent
took the callee for one). Now a do-not-call request in the reply keeps the voicemail tool
out whichever tool ends the call; one that comes after the voicemail tool takes its outcome
back (d144c93)."""

from __future__ import annotations

import itertools

import pytest

from agent.session import build_agent
from common.contracts import OUTCOME_NONE
from tests.unit.test_agent_conversation import (
    FakeCallControl,
    ScriptedLLM,
    alice_plan,
    said_until_hung_up,
)
from tests.unit.test_voicemail_tool_as_the_call_ends import calls

HEARD = "Please take me off your list, bye."
GOODBYE = "Sorry for the trouble, goodbye."
TOOLS = ("end_call", "add_to_do_not_call", "detected_answering_machine")


@pytest.mark.parametrize("order", list(itertools.permutations(TOOLS)), ids="-".join)
async def test_a_do_not_call_request_keeps_the_voicemail_tool_out(order: tuple[str, ...]) -> None:
    control = FakeCallControl()
    llm = ScriptedLLM(
        {
            HEARD: ("", calls(*order)),
            "tool:end_call": (GOODBYE, []),
            "tool:add_to_do_not_call": (GOODBYE, []),
        }
    )
    agent = build_agent(alice_plan(), control)

    await said_until_hung_up(agent, llm, HEARD)

    assert ("do_not_call",) in control.actions
    assert control.actions.count(("hang_up",)) == 1
    assert control.actions[-1] == ("hang_up",)
    assert not agent.reached_machine  # a person, who asked not to be called
    outcomes = [action for action in control.actions if action[0] == "set_outcome"]
    if order.index("detected_answering_machine") < order.index("add_to_do_not_call"):
        # The outcome already on its way to LiveKit as the request ran: taken back (d144c93).
        assert outcomes == [("set_outcome", "voicemail"), ("set_outcome", OUTCOME_NONE)]
    else:
        assert outcomes == []
