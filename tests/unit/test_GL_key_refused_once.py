"""A provider that refuses the agent's API key once, as the session connects ahead while the
phone rings, and takes it when asked again (its auth service blinking, a key rotated a second
late) does not end the ringing call: only a key refused twice is (KEY_REFUSAL_RECHECK_S).

The entrypoint (a stand-in JobContext, as tests/unit/test_GJ_key_refused_while_ringing.py
drives it), the session as `build_session` makes it, with the agent's own Cartesia TTS and
OpenAI LLM pointed at local stand-ins."""

from __future__ import annotations

import asyncio
from typing import cast

import aiohttp
import pytest
from aiohttp import web
from livekit.agents import AgentSession, JobContext
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent import worker
from agent.cartesia_tts import CartesiaTTS
from agent.openai_llm import CallLLM
from agent.plan import SessionPlan, plan_session
from agent.worker import entrypoint
from common.config_store.model import CallConfig, CallOptions
from common.settings import Settings
from common.update_config import ConfigStore
from tests.unit.test_agent_answer import amd_says
from tests.unit.test_agent_conversation import ScriptedLLM
from tests.unit.test_agent_reporting import CALL
from tests.unit.test_agent_worker import FakeJobContext, FakeRoom, built_without_room, make_job
from tests.unit.test_agent_worker import settings as settings  # noqa: F401 - a fixture

# How long the phone rings in these tests before the callee is found not to answer: longer
# than the recheck and its connection.
RINGS_S = 3.0


async def test_a_key_cartesia_refuses_once_does_not_end_the_ringing_call(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cartesia answers the connection made ahead 401, then takes the next: the phone rings
    on until the callee does not answer (here), not `failed` 'refused its API key' at the
    first 401. Before, that one refusal deleted the ringing call's room."""
    options = CallOptions(first_message="Hi Alice, it's your coach.")
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL, options=options)
    connections: list[int] = []

    async def websocket(request: web.Request) -> web.StreamResponse:
        connections.append(len(connections) + 1)
        if len(connections) == 1:
            return web.json_response({"error": "invalid api key"}, status=401)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _message in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/tts/websocket", websocket)
    cartesia_server = await aiohttp_server(app)
    http = aiohttp.ClientSession()
    llm = ScriptedLLM(amd_says("human", "Hello?"))
    sessions: list[AgentSession[None]] = []

    def blinking_tts(_plan: SessionPlan, _settings: Settings) -> CartesiaTTS:
        base = str(cartesia_server.make_url("")).rstrip("/")
        return CartesiaTTS(api_key="good-key", base_url=base, http_session=http)

    async def not_answered(_room: object, _timeout_s: float) -> None:
        await asyncio.sleep(RINGS_S)

    monkeypatch.setattr(session_module, "build_stt", lambda *_args: None)
    monkeypatch.setattr(session_module, "build_llm", lambda *_args: llm)
    monkeypatch.setattr(session_module, "build_tts", blinking_tts)
    built_without_room(monkeypatch, sessions)
    monkeypatch.setattr(worker, "wait_for_callee", not_answered)
    ctx = FakeJobContext(make_job(CALL))
    ctx.room = FakeRoom()  # type: ignore[assignment]

    try:
        async with llm:
            await asyncio.wait_for(entrypoint(cast(JobContext, ctx)), 10)
            tts = sessions[0].tts
            assert isinstance(tts, CartesiaTTS)
            assert not tts.key_refused.is_set()
            await sessions[0].aclose()
            # The session does not close its TTS, nor with it the websocket kept open in its
            # pool: closed before its HTTP session is (a connection left to the collector).
            await tts.aclose()
    finally:
        await http.close()

    assert connections == [1, 2]  # refused, then taken
    assert ctx.api.room.metadata_updates == []  # no failure recorded on the room
    assert ctx.shutdown_reasons[0] == "callee did not answer"


async def test_a_key_openai_refuses_once_is_not_refused(aiohttp_server: AiohttpServer) -> None:
    """OpenAI answers the models' list 401, then 200: the key is not taken as refused (which
    ends the ringing call); refused twice, it is."""
    asked: list[int] = []

    async def models(_request: web.Request) -> web.Response:
        asked.append(len(asked) + 1)
        if len(asked) == 1 or len(asked) >= 3:  # 1: the blink; 3, 4: the second LLM's
            error = {"message": "Incorrect API key provided", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        return web.json_response({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    server = await aiohttp_server(app)
    settings = Settings(openai_api_key="sk-good", openai_base_url=str(server.make_url("/v1")))
    plan = plan_session(CallConfig.create("Alice"), settings, call_id=CALL)

    llm = session_module.build_llm(plan, settings)
    assert isinstance(llm, CallLLM)
    llm.prewarm()
    for _ in range(100):
        if len(asked) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # its answer read
    assert asked == [1, 2]
    assert not llm.key_refused.is_set() and llm.refusal is None

    refused = session_module.build_llm(plan, settings)
    assert isinstance(refused, CallLLM)
    refused.prewarm()
    await asyncio.wait_for(refused.key_refused.wait(), 10)
    assert asked == [1, 2, 3, 4]
    await llm.aclose()
    await refused.aclose()
