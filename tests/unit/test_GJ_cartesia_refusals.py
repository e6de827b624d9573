"""Cartesia refusing to speak (credits spent, its concurrency limit, an unknown voice): the
call ends naming Cartesia's status and words, not an anonymous "no audio frames".

The real session (`build_session`, the agent's own Cartesia TTS) against local stand-ins of
OpenAI and Cartesia (tests/unit/test_agent_wire.py). Cartesia's refusal is an `error`
message on its websocket that also says `done`: `{"type": "error", "done": true,
"status_code": 402, "error_code", "title", "message"}` (docs.cartesia.ai, API errors).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from livekit.agents import APIStatusError, CloseReason
from livekit.agents.tts import TTSError
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent.cartesia_tts import say_refusals
from agent.worker import failure_name, provider_named
from tests.unit.test_agent_wire import (
    cartesia_sending_no_audio,
    fake_deepgram,
    fake_openai,
    greet_until_closed,
    greeting_for,
    heard_in,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture


def refusal(context_id: str, status: int, code: str, title: str) -> dict[str, Any]:
    """Cartesia's websocket error event (API version 2026-03-01's fields)."""
    return {
        "type": "error",
        "context_id": context_id,
        "done": True,
        "status_code": status,
        "error_code": code,
        "title": title,
        "message": f"{title}. Contact support with the request id.",
        "request_id": "550e8400-e29b-41d4-a716-446655440000",
    }


@pytest.mark.parametrize(
    ("status", "code", "title", "attempts"),
    [
        (402, "insufficient_credits", "Insufficient credits", 1),
        (400, "voice_not_found", "Voice not found", 1),
        (429, "concurrency_limited", "Too many concurrent requests", 3),
    ],
)
@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_refusal_ends_the_call_naming_cartesias_status(
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
    title: str,
    attempts: int,
) -> None:
    """Cartesia refusing the greeting: the plugin read the refusal's `done` as the end of the
    request and its log said only "no audio frames were pushed for text" (tried 3 times
    whatever the refusal); the call's reason was `tts (cartesia) APIError`, and nothing
    named the credits, the limit or the voice. Now the refusal is Cartesia's status (a 4xx
    other than 429 not tried again), its title in the log."""
    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)
    contexts: list[str] = []

    async def refuse(ws: web.WebSocketResponse, context_id: str) -> None:
        contexts.append(context_id)
        await ws.send_json(refusal(context_id, status, code, title))

    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await cartesia_sending_no_audio(aiohttp_server, refuse)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    event, _, line = await greet_until_closed(openai_in, cartesia_in, deepgram_in)

    assert event.reason == CloseReason.ERROR and isinstance(event.error, TTSError)
    error = event.error.error
    assert isinstance(error, APIStatusError) and error.status_code == status
    # The call's reason, as the worker writes it on the room (`_session_closed`).
    what = f"tts{provider_named(event.error.label)} {failure_name(error)}"
    assert what == f"tts (cartesia) APIStatusError {status}"
    assert len(contexts) == attempts
    assert line.samples == 0
    closing = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR and "unrecoverable error" in r.getMessage()
    ]
    assert len(closing) == 1
    assert f"Cartesia refused the request: {title} ({code})" in closing[0]
    assert "no audio frames" not in caplog.text
    assert "Alice" not in caplog.text


@pytest.fixture
async def refusing_socket(
    aiohttp_server: AiohttpServer,
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A websocket to a stand-in that answers each request with a refusal of the context it
    names in `refuse` (or of its own, by default), with `say_refusals` on it."""

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                body = json.loads(msg.data)
                context = body.get("refuse", body["context_id"])
                await ws.send_json(refusal(context, 400, "invalid_request", "Empty transcript"))
        return ws

    app = web.Application()
    app.router.add_get("/tts/websocket", websocket)
    server = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(server.make_url("/tts/websocket")) as ws,
    ):
        say_refusals(ws)
        yield ws


async def test_a_refusal_of_a_request_with_no_words_is_left_to_the_plugin(
    refusing_socket: aiohttp.ClientWebSocketResponse,
) -> None:
    """Cartesia refuses the blank input of a turn that only calls a tool, and the plugin
    reads that refusal as the end of the request on purpose (livekit/agents#3080): it is
    received as it came, not raised."""
    ws = refusing_socket
    await ws.send_str(json.dumps({"context_id": "ctx-tool-turn", "transcript": " "}))
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.type == WSMsgType.TEXT and json.loads(message.data)["type"] == "error"


async def test_a_refusal_of_an_earlier_request_is_left_to_the_plugin(
    refusing_socket: aiohttp.ClientWebSocketResponse,
) -> None:
    """On a pooled socket, a refusal of a request that was interrupted (not the one being
    spoken) is ignored by the plugin: it does not end the request being spoken."""
    ws = refusing_socket
    request = {"context_id": "ctx-now", "transcript": "Hello there. ", "refuse": "ctx-before"}
    await ws.send_str(json.dumps(request))
    message = await asyncio.wait_for(ws.receive(), 5)
    assert json.loads(message.data)["context_id"] == "ctx-before"

    await ws.send_str(json.dumps({"context_id": "ctx-now", "transcript": "How are you? "}))
    with pytest.raises(APIStatusError) as raised:
        await asyncio.wait_for(ws.receive(), 5)
    assert raised.value.status_code == 400
    assert str(raised.value.message) == (
        "Cartesia refused the request: Empty transcript (invalid_request)"
    )
