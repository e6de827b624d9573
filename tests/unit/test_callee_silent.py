"""A callee who says nothing is asked once whether they are still there, and, silent again,
told goodbye before the call ends: the line stayed open to max_duration_s (600 s) with
nobody on it.

The real session (`build_session`) against local stand-ins of OpenAI (scripted streamed
completions), Cartesia and Deepgram (tests/unit/test_agent_wire.py), CALLEE_SILENT_S cut to
a fraction of a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit.agents import AgentSession
from pytest_aiohttp import AiohttpServer

from agent import caller
from common.contracts import OUTCOME_CALLEE_SILENT
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_conversation import FakeCallControl
from tests.unit.test_agent_wire import FakeOpenAI
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GJ_empty_reply import wired

SILENT_S = 0.4


def instructions(completion: dict[str, Any]) -> str:
    """The last system or developer message of a request: what the agent was told to say."""
    told = [m for m in completion["messages"] if m["role"] in ("system", "developer")]
    return str(told[-1]["content"]) if told else ""


@pytest.fixture
def quick_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caller, "CALLEE_SILENT_S", SILENT_S)


GREETING = "Hello Alice Smith, this is your coach."
QUESTION = "Are you still there?"
GOODBYE = "Goodbye, I will call another time."


@contextlib.asynccontextmanager
async def asked_if_there(
    aiohttp_server: AiohttpServer, replies: list[str | tuple[str, str]]
) -> AsyncIterator[tuple[FakeOpenAI, FakeCallControl, AgentSession[None]]]:
    """Alice's session greets her, she says nothing, and it asks whether she is still there
    (OpenAI saying GREETING, QUESTION, then `replies`); closed on leaving."""
    openai_in, control, session, agent, tts = await wired(
        aiohttp_server, [GREETING, QUESTION, *replies]
    )
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        await eventually(lambda: len(openai_in.completions) == 2, "the question", 10)
        assert "whether they are still there" in instructions(openai_in.completions[1])
        yield openai_in, control, session
    finally:
        await session.aclose()
        await tts.aclose()


@pytest.mark.usefixtures("loopback_only", "http", "quick_silence")
async def test_a_silent_callee_is_asked_then_told_goodbye(aiohttp_server: AiohttpServer) -> None:
    async with asked_if_there(aiohttp_server, [GOODBYE]) as (openai_in, control, _session):
        assert control.actions == []  # asked, not ended
        await eventually(lambda: ("hang_up",) in control.actions, "the hang-up", 10)
    # Why, on the room before it goes: the call reads `completed` with the reason that the
    # callee said nothing, not as a conversation that ended well.
    assert control.actions == [("set_outcome", OUTCOME_CALLEE_SILENT), ("hang_up",)]
    assert len(openai_in.completions) == 3
    assert "goodbye" in instructions(openai_in.completions[2])


@pytest.mark.usefixtures("loopback_only", "http", "quick_silence")
async def test_a_callee_who_answers_the_question_is_not_hung_up_on(
    aiohttp_server: AiohttpServer,
) -> None:
    replies: list[str | tuple[str, str]] = [
        "Great, so about your batting.",
        "Alice, are you still there?",
        GOODBYE,
    ]
    async with asked_if_there(aiohttp_server, replies) as (openai_in, control, session):
        # What the callee's voice does to the session (its VAD): speaking, then listening.
        session._update_user_state("speaking")
        session._update_user_state("listening")
        end_user_turn(session, "Yes, sorry, I'm here.")
        await eventually(lambda: len(openai_in.completions) >= 3, "the reply", 10)
        await asyncio.sleep(SILENT_S * 0.5)
        assert control.actions == []  # they answered: the call goes on
        # Silent again: asked again (not hung up on at once), then told goodbye.
        await eventually(lambda: len(openai_in.completions) >= 4, "the second question", 10)
        assert "whether they are still there" in instructions(openai_in.completions[3])
        await eventually(lambda: ("hang_up",) in control.actions, "the hang-up", 10)
    assert len(openai_in.completions) == 5
