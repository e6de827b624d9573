"""OpenAI taking the answering-machine detector's request and never answering: the callee
who said "Hello?" is greeted within the session's bound (PROVIDER_TIMEOUT_S), not after
the detector's 20 s of silence.

The real session (`build_session`) and livekit-agents' real AMD (`agent.answer`), against
local stand-ins of OpenAI, Cartesia and Deepgram (tests/unit/test_agent_wire.py)."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import CloseEvent
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent import worker
from agent.answer import handle_answer
from agent.plan import plan_session
from agent.session import build_session
from common.config_store.model import CallConfig, CallOptions
from common.contracts import AmdVerdict
from tests.unit.test_agent_answer import end_user_turn
from tests.unit.test_agent_conversation import FakeCallControl
from tests.unit.test_agent_wire import (
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    openai_never_answering,
    point_stt,
    point_tts,
    settings_for,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_stalled_llm_does_not_hold_the_first_message_for_the_detectors_timeout(
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The detector asked the session's LLM with livekit-agents' default options (10 s an
    attempt, 3 more) and waited for its verdict up to its own 20 s timeout: with OpenAI
    stalled, the callee heard the call's first message (which needs no LLM) 20 s after
    their "Hello?", and without one the call ended after 37 s of silence. Now the
    detector's request is bounded as the session's are (PROVIDER_TIMEOUT_S, 0.5 s here),
    and its first timeout ends the detection: greeted at once, without a verdict."""
    monkeypatch.setattr(session_module, "PROVIDER_TIMEOUT_S", 0.5)
    openai_in, asked = await openai_never_answering(aiohttp_server)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for(openai_in)
    config = CallConfig.create(
        "Alice Smith",
        "You are a cricket coach.",
        call_id="call-a11ce0000001",
        options=CallOptions(first_message="Hi Alice, it's your coach."),
    )
    plan = plan_session(config, settings, call_id=config.call_id, source="config.json")
    control = FakeCallControl()
    session, agent = build_session(plan, settings, control)
    tts = point_tts(session.tts, cartesia_in)
    point_stt(session.stt, deepgram_in)
    line = PhoneLine()
    session.output.audio = line
    closed: list[CloseEvent] = []
    session.on("close", closed.append)
    verdicts: list[AmdVerdict] = []
    loop = asyncio.get_running_loop()
    try:
        await session.start(agent)
        answering = asyncio.create_task(
            handle_answer(
                session,
                agent,
                control,
                on_verdict=verdicts.append,
                llm=None,  # the session's, as the worker gives it
                participant_identity=None,
                detection_options=worker.AMD_OPTIONS,
            )
        )
        await asyncio.sleep(0.3)
        end_user_turn(session, "Hello?")
        said = loop.time()
        async with asyncio.timeout(15):
            while not line.samples:
                await asyncio.sleep(0.05)
        greeted_after = loop.time() - said
        assert await asyncio.wait_for(answering, 5) == "greet"
        assert closed == []  # the call goes on
    finally:
        await session.aclose()
        await tts.aclose()

    assert greeted_after < 12.0  # one attempt of 0.5 s, not the detector's 20 s
    assert len(asked) == 1  # the detector's request, given up after its first timeout
    assert verdicts == [] and control.actions == []
    assert (
        "answering-machine detection: the LLM did not answer in time (it timed out);"
        " greeting without a verdict"
    ) in caplog.text
