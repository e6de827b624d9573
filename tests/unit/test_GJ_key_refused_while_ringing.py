"""Cartesia or OpenAI refusing the agent's API key as the session connects ahead, while the
phone still rings: the call is ended before anyone answers it, rather than answered to
silence.

The entrypoint (a stand-in JobContext, as tests/unit/test_agent_worker.py drives it), the
session as `build_session` makes it, with the agent's own Cartesia TTS pointed at a local
stand-in that refuses the key (401)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
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
from tests.helpers import cartesia_refusing_the_key
from tests.unit.test_agent_answer import amd_says
from tests.unit.test_agent_conversation import ScriptedLLM
from tests.unit.test_agent_reporting import CALL
from tests.unit.test_agent_worker import FakeJobContext, FakeRoom, built_without_room, make_job
from tests.unit.test_agent_worker import settings as settings  # noqa: F401 - a fixture


async def test_a_key_cartesia_refuses_ends_the_call_while_it_rings(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Cartesia key revoked (or mistyped): the session's connection made ahead, while the
    phone rang, was refused (livekit-agents logs it as a WARNING, 'failed to prewarm
    connection pool', and goes on), the callee answered, heard nothing of the first message
    the TTS could not speak, and was hung up on. The refusal now ends the call as it rings:
    `failed` with the reason, nobody answered to silence."""
    options = CallOptions(first_message="Hi Alice, it's your coach.")
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL, options=options)
    cartesia_server = await cartesia_refusing_the_key(aiohttp_server)
    http = aiohttp.ClientSession()
    llm = ScriptedLLM(amd_says("human", "Hello?"))
    sessions: list[AgentSession[None]] = []
    ringing = asyncio.Event()

    def refused_tts(_plan: SessionPlan, _settings: Settings) -> CartesiaTTS:
        base = str(cartesia_server.make_url("")).rstrip("/")
        return CartesiaTTS(api_key="revoked-key", base_url=base, http_session=http)

    async def rings_on(_room: object, _timeout_s: float) -> None:
        ringing.set()
        await asyncio.sleep(3600)  # nobody answers yet

    monkeypatch.setattr(session_module, "build_stt", lambda *_args: None)
    monkeypatch.setattr(session_module, "build_llm", lambda *_args: llm)
    monkeypatch.setattr(session_module, "build_tts", refused_tts)
    built_without_room(monkeypatch, sessions)
    monkeypatch.setattr(worker, "wait_for_callee", rings_on)
    ctx = FakeJobContext(make_job(CALL))
    ctx.room = FakeRoom()  # type: ignore[assignment]

    try:
        async with llm:
            await asyncio.wait_for(entrypoint(cast(JobContext, ctx)), 10)
            await sessions[0].aclose()
    finally:
        await http.close()

    assert ringing.is_set()
    assert ctx.deleted_rooms == [CALL]
    (update,) = ctx.api.room.metadata_updates
    assert json.loads(update.metadata) == {
        "outcome": "failed",
        "reason": "the agent failed: tts (cartesia) refused its API key (APIStatusError 401);"
        " ended before an answer",
        "spoke": False,
    }
    assert ctx.shutdown_reasons[0] == "the agent failed"


async def openai_refusing_the_key(aiohttp_server: AiohttpServer) -> str:
    """OpenAI's API refusing the key (401, as it answers a revoked one): its base URL."""

    async def refuse(_request: web.Request) -> web.Response:
        error = {
            "message": "Incorrect API key provided: sk-rev*****************wxyz.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
        return web.json_response({"error": error}, status=401)

    app = web.Application()
    app.router.add_get("/v1/models", refuse)
    app.router.add_post("/v1/chat/completions", refuse)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def test_a_key_openai_refuses_ends_the_call_while_it_rings(
    settings: Settings,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An OpenAI key revoked: the session's request ahead (listing the models, as it is
    built) was refused and ignored; the callee answered, the answering-machine detector's
    request was refused, and the call ended on them. Now the refusal ends it as it rings,
    and the log says so without OpenAI's words (they quote part of the key)."""
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL)
    base_url = await openai_refusing_the_key(aiohttp_server)
    keyed = dataclasses.replace(settings, openai_api_key="sk-revoked", openai_base_url=base_url)
    monkeypatch.setattr(worker, "job_settings", lambda: keyed)
    sessions: list[AgentSession[None]] = []

    async def rings_on(_room: object, _timeout_s: float) -> None:
        await asyncio.sleep(3600)  # nobody answers yet

    monkeypatch.setattr(session_module, "build_stt", lambda *_args: None)
    monkeypatch.setattr(session_module, "build_tts", lambda *_args: None)
    built_without_room(monkeypatch, sessions)
    monkeypatch.setattr(worker, "wait_for_callee", rings_on)
    ctx = FakeJobContext(make_job(CALL))
    ctx.room = FakeRoom()  # type: ignore[assignment]

    await asyncio.wait_for(entrypoint(cast(JobContext, ctx)), 10)
    assert isinstance(sessions[0].llm, CallLLM)  # the agent's own, as built
    await sessions[0].aclose()

    assert ctx.deleted_rooms == [CALL]
    (update,) = ctx.api.room.metadata_updates
    assert json.loads(update.metadata)["reason"] == (
        "the agent failed: llm (openai) refused its API key (APIStatusError 401);"
        " ended before an answer"
    )
    assert "wxyz" not in caplog.text and "sk-rev" not in caplog.text


async def test_a_key_refused_the_models_list_alone_is_not_ended(
    aiohttp_server: AiohttpServer,
) -> None:
    """A restricted OpenAI key without the models' read scope is refused their list (403,
    'Missing scopes: api.model.read') and may still be given chat completions: the request
    ahead being refused so is no refusal of the key."""

    asked = asyncio.Event()

    async def forbidden(_request: web.Request) -> web.Response:
        asked.set()
        error = {"message": "Missing scopes: api.model.read", "type": "invalid_request_error"}
        return web.json_response({"error": error}, status=403)

    app = web.Application()
    app.router.add_get("/v1/models", forbidden)
    server = await aiohttp_server(app)
    settings = Settings(openai_api_key="sk-restricted", openai_base_url=str(server.make_url("/v1")))
    plan = plan_session(CallConfig.create("Alice"), settings, call_id=CALL)
    llm = session_module.build_llm(plan, settings)
    assert isinstance(llm, CallLLM)
    llm.prewarm()
    await asyncio.wait_for(asked.wait(), 10)
    await asyncio.sleep(0.2)  # its answer read
    assert not llm.key_refused.is_set() and llm.refusal is None
    await llm.aclose()
