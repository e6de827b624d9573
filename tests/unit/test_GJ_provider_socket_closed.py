"""A provider's websocket closing under the agent mid-call (Cartesia's here) is named as a
closed connection in the call's reason, not as an HTTP status it never was.

The real session (`build_session`) against local stand-ins (tests/unit/test_agent_wire.py);
the worker's own close handling (`_session_closed`) writes the room's outcome."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import cast

import pytest
from aiohttp import web
from livekit.agents import APIConnectionError, APIStatusError, CloseReason, JobContext
from pytest_aiohttp import AiohttpServer

from agent import worker
from agent.reporting import ReportSender
from agent.results import TranscriptRecorder
from agent.worker import failure_name
from tests.unit.test_agent_reporting import KEY, SECRET
from tests.unit.test_agent_wire import (
    cartesia_sending_no_audio,
    fake_deepgram,
    fake_openai,
    greet_until_closed,
    greeting_for,
    heard_in,
    pcm_tone,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_agent_worker import FakeJobContext, make_job


@pytest.mark.usefixtures("loopback_only", "http")
async def test_cartesia_closing_mid_greeting_is_a_closed_connection(
    aiohttp_server: AiohttpServer,
) -> None:
    """Cartesia closing its websocket (1011, its internal error) after the greeting's first
    half second of audio: the plugin gives the close code as the error's status, and the
    call's reason read `tts (cartesia) APIStatusError 1011`, an HTTP status there was not
    (and `APIStatusError -1` for a close with no code)."""

    async def close_mid_utterance(ws: web.WebSocketResponse, context_id: str) -> None:
        pcm = base64.b64encode(pcm_tone(0.5, 24000)).decode()
        chunk = {"type": "chunk", "data": pcm, "done": False, "status_code": 206}
        await ws.send_json(chunk | {"context_id": context_id})
        await asyncio.sleep(0.05)
        await ws.close(code=1011, message=b"internal error")

    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await cartesia_sending_no_audio(aiohttp_server, close_mid_utterance)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    event, _, line = await greet_until_closed(openai_in, cartesia_in, deepgram_in)
    assert event.reason == CloseReason.ERROR and event.error is not None
    assert line.samples > 0  # the callee heard the start of the greeting

    call_id = "call-a11ce0000001"
    ctx = FakeJobContext(make_job(call_id))
    job = worker._Job(
        call_id, ReportSender(None, call_id, KEY, SECRET), TranscriptRecorder(lambda _t: None)
    )
    job.end.answered = True
    worker._session_closed(cast(JobContext, ctx), job, event)
    assert job.hang_up is not None
    await asyncio.wait_for(job.hang_up, 10)
    (update,) = ctx.api.room.metadata_updates
    assert json.loads(update.metadata)["reason"] == (
        "the agent's session failed: tts (cartesia) APIStatusError: connection closed, code 1011"
    )


@pytest.mark.parametrize(
    ("error", "named"),
    [
        (APIStatusError("refused", status_code=401), "APIStatusError 401"),
        (APIStatusError("overloaded", status_code=529), "APIStatusError 529"),
        (
            APIStatusError("bye", status_code=1000),
            "APIStatusError: connection closed, code 1000",
        ),
        (APIStatusError("closed with no code", status_code=-1), "APIStatusError"),
        (APIConnectionError("lost"), "APIConnectionError"),
    ],
)
def test_how_a_failure_is_named(error: Exception, named: str) -> None:
    assert failure_name(error) == named
