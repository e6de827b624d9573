"""A long call's transcript past the model's context window: the final report says that the
transcript was too long to analyse, not only the HTTP status (the real openai plugin
against a local stand-in of OpenAI's chat completions, which refuses a request longer than
its window as OpenAI does: 400, `context_length_exceeded`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from livekit.plugins import openai
from pytest_aiohttp import AiohttpServer

from agent.analysis import AnalysisResult, analyze
from common.config_store.model import AnalysisRequest
from common.contracts import TranscriptTurn
from tests.unit.test_agent_analysis import make_llm as make_llm  # noqa: F401 - fixture

WINDOW_CHARS = 20_000  # the stand-in model's context window, in characters of the request

# OpenAI's answer to a request past the model's context window.
OPENAI_TOO_LONG = {
    "message": "This model's maximum context length is 128000 tokens. However, your messages"
    " resulted in 131072 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}
# vLLM's (an OpenAI-compatible server a deployment may point OPENAI_BASE_URL at): no code.
VLLM_TOO_LONG = {
    "object": "error",
    "message": "This model's maximum context length is 8192 tokens. However, you requested"
    " 9000 tokens in the messages. Please reduce the length of the messages.",
    "type": "BadRequestError",
    "param": None,
    "code": 400,
}


def transcript(turns: int) -> list[TranscriptTurn]:
    return [
        TranscriptTurn(
            role="agent" if n % 2 == 0 else "callee",
            text=f"At turn {n} a sentence of ordinary length is said on the phone.",
            at_s=float(n),
        )
        for n in range(turns)
    ]


@pytest.fixture
async def small_window(aiohttp_server: AiohttpServer) -> AsyncIterator[dict[str, Any]]:
    """OpenAI's chat completions with a model of WINDOW_CHARS: a longer request is refused
    with `state["error"]`; `state["url"]` is its base URL."""
    state: dict[str, Any] = {"error": OPENAI_TOO_LONG, "requests": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        state["requests"] += 1
        assert len(json.dumps(body["messages"])) > WINDOW_CHARS  # only long ones, here
        return web.json_response({"error": state["error"]}, status=400)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    state["url"] = str(server.make_url("/v1"))
    yield state


@pytest.mark.parametrize("error", [OPENAI_TOO_LONG, VLLM_TOO_LONG], ids=["openai", "vllm"])
async def test_a_transcript_past_the_window_is_said_to_be(
    small_window: dict[str, Any],
    make_llm: Callable[[str], openai.LLM],  # noqa: F811
    error: dict[str, Any],
) -> None:
    """500 turns: the analysis failed with "the LLM API answered HTTP 400", as a malformed
    request would read, and nothing in the call's result said it was too long to analyse."""
    small_window["error"] = error
    result = await analyze(
        make_llm(small_window["url"]),
        AnalysisRequest(summary=True),
        transcript(500),
        context_instructions="You are a cricket coach calling Alice.",
        timeout_s=30,
    )
    assert small_window["requests"] == 1  # a 400 is not retried
    assert result == AnalysisResult(
        errors=[
            "analysis failed: the transcript is longer than the model's context window"
            " (the LLM API answered HTTP 400)"
        ]
    )
