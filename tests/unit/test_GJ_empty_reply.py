"""An LLM reply that says nothing (an empty completion) is said in the agent's log: the
callee heard silence where a reply should be.

The real session (`build_session`) against local stand-ins of OpenAI (a streamed chat
completion per request, scripted), Cartesia and Deepgram (tests/unit/test_agent_wire.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from livekit.agents import AgentSession
from livekit.agents.voice import io
from pytest_aiohttp import AiohttpServer

from agent.caller import CallControl, OutboundCaller
from agent.plan import plan_session
from agent.session import build_session
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_conversation import FakeCallControl
from tests.unit.test_agent_wire import (
    ALICE,
    Answer,
    FakeCartesia,
    FakeOpenAI,
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    point_stt,
    point_tts,
    scripted_openai,
    settings_for,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture

# What OpenAI streams for each request in turn: words, or a tool call (name, arguments).
SCRIPT: list[Answer] = [
    "Hello Alice Smith, this is your coach.",  # the greeting
    "",  # the reply to the callee's question: an empty completion
    ("end_call", "{}"),  # the callee says goodbye: the agent ends the call
    "Goodbye Alice!",  # the reply the tool asks for
]


async def wired(
    aiohttp_server: AiohttpServer, script: list[Answer]
) -> tuple[FakeOpenAI, FakeCallControl, AgentSession[None], OutboundCaller, Any]:
    """Alice's real session (`build_session`) on stand-ins of OpenAI (saying `script`),
    Cartesia and Deepgram, speaking to a PhoneLine; its TTS, for the caller to close."""
    openai_in = await scripted_openai(aiohttp_server, script)
    control = FakeCallControl()
    _cartesia_in, session, agent, tts = await wired_to(aiohttp_server, openai_in, control)
    return openai_in, control, session, agent, tts


async def wired_to(
    aiohttp_server: AiohttpServer,
    openai_in: FakeOpenAI,
    control: CallControl,
    line: io.AudioOutput | None = None,
) -> tuple[FakeCartesia, AgentSession[None], OutboundCaller, Any]:
    """Alice's real session on `openai_in` and stand-ins of Cartesia (returned) and Deepgram,
    doing to the call what `control` records, speaking to `line` (a PhoneLine by default);
    its TTS, for the caller to close."""
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for(openai_in)
    plan = plan_session(ALICE, settings, call_id=ALICE.call_id, source="config.json")
    session, agent = build_session(plan, settings, control)
    tts = point_tts(session.tts, cartesia_in)
    point_stt(session.stt, deepgram_in)
    session.output.audio = PhoneLine() if line is None else line
    return cartesia_in, session, agent, tts


@pytest.mark.usefixtures("loopback_only", "http")
async def test_an_empty_reply_is_a_warning(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenAI answering the callee's question with an empty completion: the agent said
    nothing and no line said so (a model answering every request so, a reasoning model
    that spent its tokens or a content filter, made every call mute, each `completed`
    with the callee's turns alone, and the log silent). A WARNING names the call; a reply
    that is a tool call alone is no such reply."""
    openai_in, control, session, agent, tts = await wired(aiohttp_server, SCRIPT)
    empty = (
        f"call {ALICE.call_id}: the LLM (gpt-4o-mini) answered with nothing to say;"
        " the callee heard nothing"
    )

    def warned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "agent.caller"
        ]

    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        assert warned() == []
        end_user_turn(session, "How do I hold the bat?")
        await eventually(lambda: len(openai_in.completions) == 2 and warned(), "the reply", 10)
        assert warned() == [empty]
        end_user_turn(session, "Never mind, bye!")
        await eventually(lambda: ("hang_up",) in control.actions, "the goodbye", 10)
    finally:
        await session.aclose()
        await tts.aclose()

    assert len(openai_in.completions) == 4
    assert warned() == [empty]  # the tool call and the goodbye said something
