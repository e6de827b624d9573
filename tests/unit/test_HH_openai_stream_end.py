"""OpenAI's reply stream ending cleanly but early: the HTTP response ends well (its chunked
body's last chunk), the SSE stream has no finish_reason and no `[DONE]` (a proxy or gateway
that gave up on the upstream, an OpenAI-compatible server restarting). The plugin took the
words received as the whole reply: the callee heard half a sentence and then nothing (the
agent waited for them to speak), and the transcript kept the half sentence as a whole,
uninterrupted turn. Now such a stream fails the request as a stream cut off does (4f0c3a1's
`Cut`): with nothing said yet it is tried again, else the words said are the turn, marked
interrupted, and the callee hears the apology.

The real session on local stand-ins speaking OpenAI's SSE format (tests/unit/test_agent_wire.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from livekit.agents import CloseReason
from livekit.agents.llm import LLMError
from pytest_aiohttp import AiohttpServer

from agent.apology import apology_for
from tests.unit.test_agent_wire import (
    ALICE,
    FakeOpenAI,
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    sse,
    stream_answer,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GN_provider_fails_mid_call import REPLIES, Call, spoken
from tests.unit.test_GN_provider_fails_mid_call import quick_retries as quick_retries  # noqa: F401

HALF = "Keep your head still and"


class EndsEarly:
    """An answer whose SSE stream ends, cleanly, after `words` (or a tool call's first
    arguments): no finish_reason, no `[DONE]`."""

    def __init__(self, words: str = "", tool_arguments: str | None = None) -> None:
        self.words = words
        self.tool_arguments = tool_arguments


Script = Callable[[int], "str | tuple[str, str] | EndsEarly"]


async def openai_scripted(aiohttp_server: AiohttpServer, script: Script) -> FakeOpenAI:
    completions: list[dict[str, Any]] = []

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        completions.append(body)
        number = len(completions)
        answer = script(number - 1)
        if not isinstance(answer, EndsEarly):
            return await stream_answer(request, body, number, answer)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": body["model"],
        }

        async def send(delta: dict[str, Any]) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
            await response.write(sse(base | {"choices": [choice]}))

        await send({"role": "assistant", "content": ""})
        if answer.words:
            await send({"content": answer.words})
        if answer.tool_arguments is not None:
            function = {"name": "end_call", "arguments": answer.tool_arguments}
            call = {"index": 0, "id": "call_1", "type": "function", "function": function}
            await send({"tool_calls": [call]})
        await response.write_eof()  # the chunked body's last chunk: a clean end
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return FakeOpenAI(await aiohttp_server(app), completions, [])


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_reply_whose_stream_ends_early_is_not_taken_as_whole(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    openai_in = await openai_scripted(
        aiohttp_server, lambda n: REPLIES[n] if n < len(REPLIES) else EndsEarly(HALF)
    )
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.talk()
        event = await asyncio.wait_for(call.closed, 15)
    finally:
        await call.aclose()

    assert event.reason == CloseReason.ERROR and isinstance(event.error, LLMError)
    said = [(t.role, t.text, t.interrupted) for t in call.turns]
    assert said[-2:] == [("agent", HALF, True), ("agent", apology_for("en"), False)]
    assert spoken(cartesia_in).endswith(apology_for("en"))
    assert len(openai_in.completions) == 3  # words said: not asked again
    assert "OpenAI's reply stream ended before the reply did" in caplog.text
    room = await call.outcome_on_the_room(event)
    assert (room["outcome"], room["spoke"]) == ("failed", True)
    assert room["reason"] == "the agent's session failed: llm (openai) APIConnectionError"


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_stream_that_ends_before_any_word_is_asked_again(
    aiohttp_server: AiohttpServer,
) -> None:
    """Nothing said yet (the stream ended after its first, empty chunk): asked again, and
    the callee hears the whole reply. Before, the agent said nothing at all and waited."""
    answers: list[str | EndsEarly] = [REPLIES[0], EndsEarly(), REPLIES[1]]
    openai_in = await openai_scripted(aiohttp_server, answers.__getitem__)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.first_reply()
    finally:
        await call.aclose()

    assert [(t.role, t.text) for t in call.turns][-1] == ("agent", REPLIES[1])
    assert len(openai_in.completions) == 3


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_tool_call_whose_stream_ends_early_is_not_dropped_in_silence(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool call's arguments cut by a clean end (`{"reas`): the plugin dropped the call
    without a word (it emits one at its finish_reason), and the callee waited in silence for
    a reply that was never asked for. Now it is asked again."""
    answers: list[Any] = [REPLIES[0], EndsEarly(tool_arguments='{"reas'), REPLIES[1]]
    openai_in = await openai_scripted(aiohttp_server, answers.__getitem__)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    caplog.set_level(logging.WARNING)
    try:
        await call.first_reply()
    finally:
        await call.aclose()

    assert [(t.role, t.text) for t in call.turns][-1] == ("agent", REPLIES[1])
    assert len(openai_in.completions) == 3
    assert json.loads(json.dumps(openai_in.completions[-1]["messages"][-1]))["role"] == "user"
