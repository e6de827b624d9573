"""The LLM's detected_answering_machine while the call is already ending.

An LLM may call its tools together: the callee says "take me off your list" and it calls
add_to_do_not_call and detected_answering_machine in one reply, or it calls the voicemail tool
twice. The voicemail tool then recorded `voicemail` on a call the do-not-call request was
ending, and read the call's voicemail message to the person who had just asked not to be
called; called twice, it began the message twice. Once the call is ending, it is not taken."""

from __future__ import annotations

import dataclasses

import pytest
from livekit.agents.llm import FunctionToolCall

from agent.session import build_agent
from common.config_store.model import CallOptions, VoicemailPolicy
from tests.unit.test_agent_conversation import (
    FakeCallControl,
    ScriptedLLM,
    alice_plan,
    said_until_hung_up,
)

MESSAGE = "Hi Alice, this is your coach. Practice is moved to Friday."


def calls(*names: str) -> list[FunctionToolCall]:
    return [
        FunctionToolCall(name=name, arguments="{}", call_id=f"call_{n}_{name}")
        for n, name in enumerate(names)
    ]


@pytest.mark.parametrize(
    ("tools", "actions", "said"),
    [
        (
            ("add_to_do_not_call", "detected_answering_machine"),
            [("do_not_call",), ("hang_up",)],
            [],
        ),
        (
            ("detected_answering_machine", "detected_answering_machine"),
            [("set_outcome", "voicemail"), ("hang_up",)],
            [MESSAGE],
        ),
    ],
)
async def test_the_voicemail_tool_is_not_taken_once_the_call_is_ending(
    tools: tuple[str, ...], actions: list[tuple[str, ...]], said: list[str]
) -> None:
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=MESSAGE))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    control = FakeCallControl()
    llm = ScriptedLLM(
        {
            "Please take me off your list.": ("", calls(*tools)),
            "tool:add_to_do_not_call": ("Sorry for the trouble, goodbye.", []),
        }
    )
    agent = build_agent(plan, control)

    messages = await said_until_hung_up(agent, llm, "Please take me off your list.")

    assert control.actions == actions
    assert [text for text in messages if text == MESSAGE] == said
