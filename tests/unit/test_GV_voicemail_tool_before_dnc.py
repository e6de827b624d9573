"""The LLM's detected_answering_machine and add_to_do_not_call in one reply, the voicemail
tool first.

37e5d4b made the voicemail tool not taken once the call is ending, for add_to_do_not_call
called first in the reply. In the other order the voicemail tool ran first, and while its
outcome went to LiveKit (UpdateRoomMetadata, a request over the network) add_to_do_not_call
ran, its hang-up scheduled on its reply; then the voicemail tool read the call's voicemail
message to the person who had just asked not to be called (seen with the real session and a
control whose outcome takes 50 ms to record: actions do_not_call, set_outcome voicemail,
hang_up, and the message said). Now the voicemail tool claims the call's end before its
request, and a do-not-call request that came meanwhile is honoured as when it comes first:
no voicemail message, the line closed after the reply to the request."""

from __future__ import annotations

import asyncio
import dataclasses

from agent.session import build_agent
from common.config_store.model import CallOptions, VoicemailPolicy
from tests.unit.test_agent_conversation import (
    FakeCallControl,
    ScriptedLLM,
    alice_plan,
    said_until_hung_up,
)
from tests.unit.test_voicemail_tool_as_the_call_ends import MESSAGE, calls

GOODBYE = "Sorry for the trouble, goodbye."


class LiveKitPaced(FakeCallControl):
    """Records the outcome as LiveKit does: after a request's round trip."""

    async def set_outcome(self, outcome: str) -> None:
        await asyncio.sleep(0.05)
        await super().set_outcome(outcome)


async def test_a_do_not_call_request_after_the_voicemail_tool_is_not_read_the_message() -> None:
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=MESSAGE))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    control = LiveKitPaced()
    llm = ScriptedLLM(
        {
            "Please take me off your list.": (
                "",
                calls("detected_answering_machine", "add_to_do_not_call"),
            ),
            "tool:add_to_do_not_call": (GOODBYE, []),
        }
    )
    agent = build_agent(plan, control)

    # A message begun would be added 0.2 s after the hang-up.
    heard = "Please take me off your list."
    messages = await said_until_hung_up(agent, llm, heard, linger_s=0.2)

    assert MESSAGE not in messages  # as with add_to_do_not_call first in the reply
    assert ("do_not_call",) in control.actions
    assert control.actions.count(("hang_up",)) == 1
    assert control.actions[-1] == ("hang_up",)
    assert not agent.reached_machine  # a person, who asked: apologised to if a provider fails


async def test_the_voicemail_tool_alone_still_leaves_the_message() -> None:
    """Its outcome recorded at LiveKit's pace, the message is left and the line closed."""
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=MESSAGE))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    control = LiveKitPaced()
    greeting = "Leave a message after the tone."
    llm = ScriptedLLM({greeting: ("", calls("detected_answering_machine"))})
    agent = build_agent(plan, control)

    messages = await said_until_hung_up(agent, llm, greeting)

    assert MESSAGE in messages
    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
    assert agent.reached_machine
