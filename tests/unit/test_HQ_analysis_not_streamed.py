"""The post-call analysis on an LLM endpoint that answers one JSON completion, not a stream of
events (a server that ignores `stream`, a gateway that buffers and re-types the answer).

Since 1a2a411 the agent's WARNING says so, but the analysis's failure, what the call's final
report (GET /calls/{id}, the customer's webhook) carries, said "the LLM API's answer stream
ended before the answer did (no finish_reason, no [DONE])": a stream cut short, sending its
reader to look for a proxy cutting streams, when nothing streamed at all. It names what is
wrong now. The real openai plugin and the analysis, on a local stand-in.
"""

from __future__ import annotations

import json

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from agent.analysis import AnalysisResult, analyze
from agent.openai_llm import CallLLM
from tests.unit.test_agent_analysis import GOOD_ANSWER, REQUEST, TRANSCRIPT
from tests.unit.test_HN_openai_done_without_finish import call_llm
from tests.unit.test_HN_openai_done_without_finish import made as made  # noqa: F401


async def test_the_analysis_says_its_answer_was_no_stream(
    aiohttp_server: AiohttpServer, made: list[CallLLM]
) -> None:
    asked: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        asked.append(await request.json())
        message = {"role": "assistant", "content": json.dumps(GOOD_ANSWER)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        completion = {"id": "cmpl-q", "object": "chat.completion", "created": 1, "model": "m"}
        return web.json_response(completion | {"choices": [choice]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    base_url = str((await aiohttp_server(app, host="127.0.0.1")).make_url("/v1"))
    llm = call_llm(base_url, made)

    result = await analyze(llm, REQUEST, TRANSCRIPT, context_instructions="A coach.", timeout_s=30)

    assert result == AnalysisResult(
        errors=[
            "analysis failed: the LLM API's answer was not a stream of events"
            " (text/event-stream): the LLM endpoint (OPENAI_BASE_URL) must stream its replies"
        ]
    )  # was "... answer stream ended before the answer did (no finish_reason, no [DONE])"
    assert len(asked) == 1
