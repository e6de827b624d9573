"""The agent that fails says on the room whether it had said a turn to the callee: the
server settles an answered call whose agent failed silent as `failed` (see
tests/integration/test_GJ_agent_said_nothing.py).

The real session (`build_session`) against local stand-ins of OpenAI, Cartesia and Deepgram
(tests/unit/test_agent_wire.py); the worker's own close handling (`_session_closed`)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import cast

import pytest
from aiohttp import web
from livekit.agents import CloseEvent, CloseReason, JobContext
from pytest_aiohttp import AiohttpServer

from agent import worker
from agent.apology import apology_for
from agent.plan import plan_session
from agent.reporting import ReportSender
from agent.results import TranscriptRecorder
from agent.session import build_session
from common.contracts import TranscriptTurn
from tests.helpers import NullControl
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_reporting import KEY, SECRET
from tests.unit.test_agent_wire import (
    ALICE,
    PhoneLine,
    close_awaited,
    fake_cartesia,
    fake_deepgram,
    fake_openai,
    greeting_for,
    heard_in,
    point_stt,
    point_tts,
    settings_for,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_agent_worker import FakeJobContext, make_job


async def call_failing_on(
    aiohttp_server: AiohttpServer, refused_from: int, recorder: TranscriptRecorder
) -> CloseEvent:
    """ALICE's answered call, its OpenAI answering from its `refused_from`th request on with
    500, its turns told to `recorder`: the session's close event."""
    asked: list[int] = []

    def refuse() -> web.Response | None:
        asked.append(1)
        if len(asked) < refused_from:
            return None
        return web.json_response({"error": {"message": "The server had an error"}}, status=500)

    openai_in = await fake_openai(aiohttp_server, greeting_for, refuse)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for(openai_in)
    plan = plan_session(ALICE, settings, call_id=ALICE.call_id, source="config.json")
    recorder.start(time.time())
    session, agent = build_session(plan, settings, NullControl())
    tts = point_tts(session.tts, cartesia_in)
    point_stt(session.stt, deepgram_in)
    session.output.audio = PhoneLine()
    session.on("conversation_item_added", recorder.on_item_added)
    closed = close_awaited(session)
    try:
        await session.start(agent)
        agent.greet()
        if refused_from > 1:  # greeted: the callee answers, and the reply is refused
            await eventually(lambda: recorder.turns, "the greeting", 10)
            end_user_turn(session, "How do I hold the bat?")
        return await asyncio.wait_for(closed, 15)
    finally:
        await session.aclose()
        await tts.aclose()


@pytest.mark.parametrize(("refused_from", "spoke"), [(1, False), (2, True)])
@pytest.mark.usefixtures("loopback_only", "http")
async def test_the_room_says_whether_the_agent_had_spoken(
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    refused_from: int,
    spoke: bool,
) -> None:
    """OpenAI failing the greeting (the callee heard nothing) or the reply to the callee (the
    agent had greeted them): the failure on the room says which, `spoke`."""
    from agent import session as session_module

    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)
    call_id = "call-a11ce0000001"
    turns: list[TranscriptTurn] = []
    job = worker._Job(
        call_id, ReportSender(None, call_id, KEY, SECRET), TranscriptRecorder(turns.append)
    )
    event = await call_failing_on(aiohttp_server, refused_from, job.recorder)
    assert event.reason == CloseReason.ERROR

    ctx = FakeJobContext(make_job(call_id))
    job.end.answered = True
    worker._session_closed(cast(JobContext, ctx), job, event)
    assert job.hang_up is not None
    await asyncio.wait_for(job.hang_up, 10)

    (update,) = ctx.api.room.metadata_updates
    assert json.loads(update.metadata) == {
        "campaign": "SUMMER2024",  # the room's own metadata, kept
        "outcome": "failed",
        "reason": "the agent's session failed: llm (openai) APIStatusError 500",
        "spoke": spoke,
    }
    # The apology said after the failure (agent.session.CallSession) is the last turn, and
    # not what `spoke` counts.
    assert [t.role for t in turns] == (["agent"] if not spoke else ["agent", "callee", "agent"])
    assert turns[-1].text == apology_for("en")
