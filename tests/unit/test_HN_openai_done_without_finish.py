"""An OpenAI-compatible server (vLLM, llama.cpp's server, LocalAI, LM Studio) that ends a whole
reply's stream with `data: [DONE]` and sends no finish_reason. Since 434e295 a stream without
a finish_reason failed as cut: every reply of such a server failed (the callee heard the
greeting's words, then the apology, and the call ended `failed`), and the post-call analysis
failed on every call. `[DONE]` says the stream is whole; only a stream that ends with neither
is cut. And the analysis said a cut stream's failure as "connection error".

The real session and the real openai plugin on local stand-ins speaking the SSE wire format.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from livekit.agents import APIConnectOptions, function_tool
from livekit.agents.llm import ChatContext, CollectedResponse
from pytest_aiohttp import AiohttpServer

from agent.analysis import AnalysisResult, analyze
from agent.openai_llm import CallLLM
from tests.unit.test_agent_analysis import GOOD_ANSWER, REQUEST, TRANSCRIPT
from tests.unit.test_agent_wire import (
    ALICE,
    FakeOpenAI,
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    sse,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GN_provider_fails_mid_call import REPLIES, Call, spoken
from tests.unit.test_GN_provider_fails_mid_call import quick_retries as quick_retries  # noqa: F401


class Compatible:
    """A chat completions stand-in answering each request with `replies` in turn, streamed in
    pieces with no finish_reason; each stream ends with `data: [DONE]` when `done`."""

    def __init__(self, replies: list[str], *, done: bool = True) -> None:
        self.replies = replies
        self.done = done
        self.completions: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.completions.append(body)
        reply = self.replies[min(len(self.completions), len(self.replies)) - 1]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        pieces = [{"role": "assistant", "content": ""}]
        pieces += [{"content": reply[i : i + 11]} for i in range(0, len(reply), 11)]
        for delta in pieces:  # llama.cpp's and LocalAI's: no finish_reason key at all
            await response.write(sse(base | {"choices": [{"index": 0, "delta": delta}]}))
        if self.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def serve(aiohttp_server: AiohttpServer, fake: Compatible) -> str:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    return str((await aiohttp_server(app, host="127.0.0.1")).make_url("/v1"))


@pytest.fixture
async def made() -> AsyncIterator[list[CallLLM]]:
    llms: list[CallLLM] = []
    yield llms
    for llm in llms:
        await llm.aclose()


def call_llm(base_url: str, made: list[CallLLM]) -> CallLLM:
    options = APIConnectOptions(max_retry=1, retry_interval=0.1, timeout=10)
    llm = CallLLM(
        conn_options=options, call_id="call-hn", model="m", api_key="test", base_url=base_url
    )
    made.append(llm)
    return llm


async def reply_to(
    llm: CallLLM, question: str = "How do I hold the bat?", tools: list[Any] | None = None
) -> CollectedResponse:
    """The callee's one question asked, and the whole reply read (the stream closed after)."""
    chat = ChatContext()
    chat.add_message(role="user", content=question)
    stream = llm.chat(chat_ctx=chat, tools=tools)
    try:
        return await asyncio.wait_for(stream.collect(), 20)
    finally:
        await stream.aclose()


async def test_a_stream_ended_by_done_without_finish_reason_is_the_whole_reply(
    aiohttp_server: AiohttpServer, made: list[CallLLM], caplog: pytest.LogCaptureFixture
) -> None:
    fake = Compatible([REPLIES[1]])
    answer = await reply_to(call_llm(await serve(aiohttp_server, fake), made))

    assert answer.text == REPLIES[1]  # was APIConnectionError "... ended before the reply did"
    assert len(fake.completions) == 1
    assert "ended before" not in caplog.text


@function_tool
async def end_call(reason: str) -> str:
    """End the call: the callee said goodbye."""
    return reason


async def test_a_tool_call_in_a_stream_ended_by_done_is_not_dropped(
    aiohttp_server: AiohttpServer, made: list[CallLLM]
) -> None:
    """The plugin emits a tool call at its finish_reason: with none, the agent's end_call
    (or do-not-call, voicemail) was dropped without a word, and the line stayed open."""
    fake = Compatible([""])
    call = {"index": 0, "id": "call_1", "type": "function"}
    call["function"] = {"name": "end_call", "arguments": '{"reason": "goodbye"}'}

    async def handle(request: web.Request) -> web.StreamResponse:
        fake.completions.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "cmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        for delta in ({"role": "assistant", "content": None}, {"tool_calls": [call]}):
            await response.write(sse(base | {"choices": [{"index": 0, "delta": delta}]}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    fake.handle = handle  # type: ignore[method-assign]
    llm = call_llm(await serve(aiohttp_server, fake), made)
    answer = await reply_to(llm, "Thanks, goodbye.", tools=[end_call])

    assert [(c.name, c.arguments) for c in answer.tool_calls] == [
        ("end_call", '{"reason": "goodbye"}')
    ]
    assert len(fake.completions) == 1


async def test_a_stream_ended_by_neither_is_still_cut(
    aiohttp_server: AiohttpServer, made: list[CallLLM]
) -> None:
    fake = Compatible([REPLIES[1]], done=False)
    llm = call_llm(await serve(aiohttp_server, fake), made)
    with pytest.raises(Exception, match="ended before the reply did"):
        await reply_to(llm)


async def test_an_answer_that_is_no_stream_is_said_so_and_not_asked_again(
    aiohttp_server: AiohttpServer, made: list[CallLLM], caplog: pytest.LogCaptureFixture
) -> None:
    """A server that ignores `stream` and answers one JSON completion: read as no event,
    it was "the stream ended before the reply did" (a proxy cutting streams?), and asked
    again for the same answer while the callee waited."""
    fake = Compatible([""])

    async def handle(request: web.Request) -> web.Response:
        fake.completions.append(await request.json())
        message = {"role": "assistant", "content": REPLIES[1]}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        completion = {"id": "cmpl-3", "object": "chat.completion", "created": 1, "model": "m"}
        return web.json_response(completion | {"choices": [choice]})

    fake.handle = handle  # type: ignore[method-assign]
    llm = call_llm(await serve(aiohttp_server, fake), made)
    with pytest.raises(Exception, match="ended before the reply did"):
        await reply_to(llm)

    assert len(fake.completions) == 1  # was 2: the same answer asked for again
    assert "its answer was application/json, not a stream of events" in caplog.text


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_call_on_a_compatible_server_hears_its_replies_whole(
    aiohttp_server: AiohttpServer,
) -> None:
    """The greeting and the reply said whole, nothing asked twice, no apology."""
    fake = Compatible(REPLIES)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.handle)
    openai_in = FakeOpenAI(await aiohttp_server(app), fake.completions, [])
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.first_reply()
        await asyncio.sleep(0.3)  # an apology, were the reply failed, would follow it
    finally:
        await call.aclose()

    said = [(t.role, t.text, t.interrupted) for t in call.turns]
    assert said[0] == ("agent", REPLIES[0], False)
    assert said[-1] == ("agent", REPLIES[1], False)
    assert len(fake.completions) == 2  # each asked once
    assert spoken(cartesia_in).endswith(REPLIES[1])


async def test_the_analysis_on_a_compatible_server_reads_its_answer(
    aiohttp_server: AiohttpServer, made: list[CallLLM]
) -> None:
    fake = Compatible([json.dumps(GOOD_ANSWER)])
    llm = call_llm(await serve(aiohttp_server, fake), made)

    result = await analyze(llm, REQUEST, TRANSCRIPT, context_instructions="A coach.", timeout_s=30)

    assert result.errors == []  # was ["analysis failed: connection error"]
    assert result.summary == GOOD_ANSWER["summary"]


async def test_the_analysis_says_its_answer_stream_ended_early(
    aiohttp_server: AiohttpServer, made: list[CallLLM]
) -> None:
    fake = Compatible([json.dumps(GOOD_ANSWER)], done=False)
    llm = call_llm(await serve(aiohttp_server, fake), made)

    result = await analyze(llm, REQUEST, TRANSCRIPT, context_instructions="A coach.", timeout_s=30)

    assert result == AnalysisResult(
        errors=[
            "analysis failed: the LLM API's answer stream ended before the answer did"
            " (no finish_reason, no [DONE])"
        ]
    )
