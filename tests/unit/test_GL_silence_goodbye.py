"""A silent callee's line, as the agent asks whether they are still there and ends the call
(375589c): one who speaks as the agent's goodbye is on its way (their "Yes, sorry, I'm here"
while the LLM writes it, or over it) is not hung up on; one who presses a key is there; and a
line silent since before the greeting (a phone that rang, or a detector that listened, longer
than CALLEE_SILENT_S) is asked about too.

The real session (`build_session`) against local stand-ins of OpenAI (scripted streamed
completions, one of them held until the test lets it go), Cartesia and Deepgram, as in
tests/unit/test_callee_silent.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from livekit.agents import AgentSession
from pytest_aiohttp import AiohttpServer

from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_conversation import FakeCallControl
from tests.unit.test_agent_wire import (
    FakeCartesia,
    FakeOpenAI,
    scripted_openai,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_callee_silent import GOODBYE, GREETING, QUESTION, SILENT_S, instructions
from tests.unit.test_callee_silent import quick_silence as quick_silence  # noqa: F401 - a fixture
from tests.unit.test_GJ_empty_reply import wired_to

REPLY = "Oh good, so about your batting."


@contextlib.asynccontextmanager
async def greeted(
    aiohttp_server: AiohttpServer,
    script: list[str],
    held: int,
    release: asyncio.Event,
    *,
    away_before: bool = False,
) -> AsyncIterator[tuple[FakeOpenAI, FakeCartesia, FakeCallControl, AgentSession[None]]]:
    """Alice's real session, started and its greeting said (OpenAI saying `script`, request
    `held` held until `release`; with `away_before`, once the session has found her away
    before it: a phone ringing, or the detector listening, longer than CALLEE_SILENT_S);
    closed on leaving."""
    openai_in = await scripted_openai(aiohttp_server, script, held=held, release=release)
    control = FakeCallControl()
    cartesia_in, session, agent, tts = await wired_to(aiohttp_server, openai_in, control)
    try:
        await session.start(agent)
        if away_before:
            await eventually(lambda: session.user_state == "away", "away before the greeting", 10)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        yield openai_in, cartesia_in, control, session
    finally:
        await session.aclose()
        await tts.aclose()


def spoken(cartesia_in: FakeCartesia) -> str:
    """All the text the session sent Cartesia to say."""
    return " ".join(r["transcript"] for socket in cartesia_in.sockets for r in socket.requests)


@pytest.mark.usefixtures("loopback_only", "http", "quick_silence")
async def test_a_callee_who_speaks_as_the_goodbye_comes_is_not_hung_up_on(
    aiohttp_server: AiohttpServer,
) -> None:
    """Silent after the question, Alice says "Yes, sorry, I'm here" while OpenAI writes the
    goodbye (the third request): she is answered, not told goodbye, and the call goes on.
    Before, the goodbye was said and its end hung up on her: the hang-up was tied to it
    whatever she said meanwhile."""
    release = asyncio.Event()
    script = [GREETING, QUESTION, GOODBYE, REPLY]
    async with greeted(aiohttp_server, script, 3, release) as (
        openai_in,
        cartesia_in,
        control,
        session,
    ):
        await eventually(lambda: len(openai_in.completions) == 3, "the goodbye's request", 10)
        assert "whether they are still there" in instructions(openai_in.completions[1])
        assert "goodbye" in instructions(openai_in.completions[2])
        # What her voice does to the session: speaking, then listening, then her turn.
        session._update_user_state("speaking")
        session._update_user_state("listening")
        end_user_turn(session, "Yes, sorry, I'm here.")
        release.set()
        await eventually(lambda: len(openai_in.completions) == 4, "the reply to her", 10)
        await eventually(lambda: "batting" in spoken(cartesia_in), "the reply said", 10)
        await asyncio.sleep(SILENT_S * 0.5)
        assert control.actions == []  # she spoke: the call goes on
        assert "call another time" not in spoken(cartesia_in)  # no goodbye: she is there


@pytest.mark.usefixtures("loopback_only", "http", "quick_silence")
async def test_a_key_pressed_after_the_question_counts_as_the_callee_there(
    aiohttp_server: AiohttpServer,
) -> None:
    """Asked whether she is still there, Alice presses a key (RoomIO's DTMF: her state goes
    from away to listening, not speaking), then puts the phone down: she is asked again,
    then told goodbye and the call ends. Before, the key left the question marked asked
    for good: no later silence was asked about or ended, and the line stayed open to
    max_duration_s (600 s)."""
    release = asyncio.Event()
    release.set()
    script = [GREETING, QUESTION, "Alice, are you still there?", GOODBYE]
    async with greeted(aiohttp_server, script, 0, release) as (
        openai_in,
        cartesia_in,
        control,
        session,
    ):
        await eventually(lambda: QUESTION in spoken(cartesia_in), "the question said", 10)
        await asyncio.sleep(SILENT_S * 0.25)
        states = [session.user_state]
        session.reset_away_timer()  # what RoomIO does for a key she pressed
        states.append(session.user_state)
        assert states == ["away", "listening"]
        await eventually(lambda: len(openai_in.completions) == 3, "the second question", 10)
        assert "whether they are still there" in instructions(openai_in.completions[2])
        await eventually(lambda: ("hang_up",) in control.actions, "the hang-up", 10)
        assert "goodbye" in instructions(openai_in.completions[3])


@pytest.mark.usefixtures("loopback_only", "http", "quick_silence")
async def test_a_line_silent_since_before_the_greeting_is_asked_about_and_ended(
    aiohttp_server: AiohttpServer,
) -> None:
    """The session starts as the phone rings (the worker starts it before the answer): a
    phone that rang, or a detector that listened, CALLEE_SILENT_S found Alice "away" before
    the greeting, which that question ignores. She stayed "away" after it (livekit-agents
    says so once, and counts again only after she speaks): a line silent from the answer on
    (a phone picked up and put down, a voicemail box recording silence), the very line the
    question is for, stayed open to max_duration_s (600 s). Now greeted, she is counted
    silent from the greeting: asked, then told goodbye and the call ends."""
    release = asyncio.Event()
    release.set()
    script = [GREETING, QUESTION, GOODBYE]
    async with greeted(aiohttp_server, script, 0, release, away_before=True) as (
        openai_in,
        _cartesia_in,
        control,
        _session,
    ):
        await eventually(lambda: len(openai_in.completions) == 2, "the question", 10)
        assert "whether they are still there" in instructions(openai_in.completions[1])
        await eventually(lambda: ("hang_up",) in control.actions, "the hang-up", 10)
        assert "goodbye" in instructions(openai_in.completions[2])
