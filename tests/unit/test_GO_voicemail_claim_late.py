"""A callee who claims to be a voicemail box once the conversation is well under way does not
settle the call as `voicemail`.

The LLM's detected_answering_machine tool recorded `voicemail` on the room and hung up (after
the call's voicemail message, if it had one) whenever the LLM called it: a callee who said
"Beep. This is my voicemail, leave a message after the tone." five minutes into a conversation
(or an LLM misreading "just leave me a message") had a call that was talked through settled
`voicemail`, which a campaign retrying voicemail calls again. A voicemail box the detector
took for a person is done greeting within VOICEMAIL_TOOL_WINDOW_S of the agent's greeting;
later the tool is refused and the conversation goes on.

The real session (`build_session`) against local stand-ins of OpenAI (scripted streamed
completions), Cartesia and Deepgram (tests/unit/test_agent_wire.py), the window cut to a
fraction of a second.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from pytest_aiohttp import AiohttpServer

from agent import caller
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GJ_empty_reply import wired

GREETING = "Hello Alice Smith, this is your coach."
CLAIM = "Beep. This is my voicemail, please leave a message after the tone."
GO_ON = "Sorry, where were we? Your batting."
WINDOW_S = 0.3


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_voicemail_claimed_late_in_the_conversation_is_not_taken(
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(caller, "VOICEMAIL_TOOL_WINDOW_S", WINDOW_S, raising=False)
    openai_in, control, session, agent, tts = await wired(
        aiohttp_server, [GREETING, ("detected_answering_machine", "{}"), GO_ON]
    )
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        await asyncio.sleep(WINDOW_S * 2)  # the conversation goes on past the window
        with caplog.at_level(logging.INFO, logger="agent.caller"):
            end_user_turn(session, CLAIM)
            await eventually(
                lambda: len(openai_in.completions) == 3 or control.actions,
                "the reply, or the hang-up",
                10,
            )
            await asyncio.sleep(0.3)
        assert control.actions == []  # no voicemail outcome, no hang-up
        assert agent.hangup_task is None
        tool_output = [m for m in openai_in.completions[2]["messages"] if m["role"] == "tool"]
        assert len(tool_output) == 1
        assert str(tool_output[0]["content"]).startswith("Not recorded")
        assert "not taken" in caplog.text
    finally:
        await session.aclose()
        await tts.aclose()


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_voicemail_greeting_right_after_the_greeting_still_counts(
    aiohttp_server: AiohttpServer,
) -> None:
    """Within the window (a box the detector took for a person), the tool works as before."""
    openai_in, control, session, agent, tts = await wired(
        aiohttp_server, [GREETING, ("detected_answering_machine", "{}")]
    )
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        end_user_turn(session, CLAIM)
        await eventually(lambda: ("hang_up",) in control.actions, "the hang-up", 10)
        assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
        assert len(openai_in.completions) == 2
    finally:
        await session.aclose()
        await tts.aclose()
