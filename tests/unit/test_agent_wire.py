"""At the wire: each call's own parameters reach Deepgram, OpenAI and Cartesia.

The plugins are the real ones, built by `agent.session` from a real call's plan; only where
they connect differs: local stand-ins on 127.0.0.1 speaking each provider's wire format (as
the installed plugins read and write it): Cartesia's TTS websocket (`/tts/websocket`: JSON
generation requests in, `chunk` / `timestamps` / `done` messages with base64 PCM out),
OpenAI's chat completions (`POST /v1/chat/completions`, a streamed SSE answer of
`chat.completion.chunk`s and `[DONE]`) and Deepgram's live recognition (`/v1/listen`: the
options in the query string, linear16 audio in, `Results` messages out). The LLM reaches its
stand-in through OPENAI_BASE_URL (`Settings.openai_base_url`); Cartesia and Deepgram, whose
endpoints have no setting (the agent uses their public APIs only), are pointed at theirs once
built. Nothing else may be reached: `loopback_only` fails a test on any other address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from livekit import rtc
from livekit.agents import AgentSession, CloseEvent
from livekit.agents import stt as agents_stt
from livekit.agents.llm import ChatContext
from livekit.agents.utils import http_context
from livekit.agents.voice import io
from livekit.plugins import cartesia, deepgram, openai
from pytest_aiohttp import AiohttpServer

from agent.apology import apology_for
from agent.plan import SessionPlan, plan_session
from agent.session import build_llm, build_session, build_stt, build_tts
from common.config_store.model import CallConfig, CallOptions
from common.settings import Settings, settings_from_env
from tests.helpers import NullControl

TIMEOUT_S = 5.0
VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"

ALICE = CallConfig.create(
    "Alice Smith",
    "You are a cricket coach. Help the caller improve their batting technique.",
    "en",
    "Neutral",
    call_id="call-a11ce0000001",
)
CARLOS = CallConfig.create(
    "Carlos García",
    "Eres un asistente de ventas. Ayuda al cliente con su pedido.",
    "es",
    "Empathetic",
    additional_params={"pedido": "A-1234"},
    call_id="call-ca7105000002",
)


# ------------------------------------------------------------------------------ the network


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As `no_network`, but 127.0.0.1 (where the stand-ins listen) may be reached."""

    def refuse(what: object) -> NoReturn:
        raise AssertionError(f"network access attempted: {what!r}")

    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_create_connection = socket.create_connection

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", b"127.0.0.1"):
            refuse(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if not (isinstance(address, tuple) and address[0] == "127.0.0.1"):
            refuse(address)
        real_connect(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] != "127.0.0.1":
            refuse(address)
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)


@pytest.mark.usefixtures("loopback_only")
def test_only_loopback_can_be_reached() -> None:
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.getaddrinfo("api.openai.com", 443)
    with pytest.raises(AssertionError, match="network access attempted"):
        socket.create_connection(("10.0.0.1", 443))
    with socket.socket() as sock, pytest.raises(AssertionError, match="network access"):
        sock.connect(("192.0.2.1", 443))


# ---------------------------------------------------------------------------- the stand-ins


def pcm_tone(seconds: float, sample_rate: int, hz: float = 440.0) -> bytes:
    """16-bit little-endian mono PCM: a tone (what Cartesia's `pcm_s16le` chunks carry)."""
    count = int(seconds * sample_rate)
    return struct.pack(
        f"<{count}h",
        *(int(8000 * math.sin(2 * math.pi * hz * i / sample_rate)) for i in range(count)),
    )


@dataclass
class CartesiaSocket:
    """One websocket a TTS opened: how it connected and each generation request it sent."""

    query: dict[str, str]
    api_key: str | None
    requests: list[dict[str, Any]] = field(default_factory=list)
    pcm_sent: int = 0

    def transcript(self, context_id: str | None = None) -> str:
        return "".join(
            r["transcript"]
            for r in self.requests
            if context_id is None or r["context_id"] == context_id
        )


@dataclass
class FakeCartesia:
    server: TestServer
    sockets: list[CartesiaSocket]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


async def fake_cartesia(
    aiohttp_server: AiohttpServer, seconds_per_word: float | None = None
) -> FakeCartesia:
    """Cartesia's TTS websocket: for each request with text, 0.1 s of PCM (a `chunk`; with
    `seconds_per_word`, that much a word: speech as long as it would be said) and the words'
    `timestamps` when asked for; once a context's input ends (`continue: false`), its `done`.
    Every message names the context it answers, as Cartesia's do."""
    sockets: list[CartesiaSocket] = []

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = CartesiaSocket(dict(request.query), request.headers.get("X-API-Key"))
        sockets.append(conn)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            body: dict[str, Any] = json.loads(msg.data)
            conn.requests.append(body)
            context_id = body["context_id"]
            words = body["transcript"].split()
            rate = body["output_format"]["sample_rate"]
            if words:
                seconds = 0.1 if seconds_per_word is None else seconds_per_word * len(words)
                pcm = pcm_tone(seconds, rate)
                conn.pcm_sent += len(pcm)
                await ws.send_json(
                    {
                        "type": "chunk",
                        "data": base64.b64encode(pcm).decode(),
                        "done": False,
                        "status_code": 206,
                        "step_time": 12.5,
                        "context_id": context_id,
                    }
                )
                if body.get("add_timestamps"):
                    await ws.send_json(
                        {
                            "type": "timestamps",
                            "done": False,
                            "status_code": 206,
                            "context_id": context_id,
                            "word_timestamps": {
                                "words": words,
                                "start": [seconds * i / len(words) for i in range(len(words))],
                                "end": [seconds * (i + 1) / len(words) for i in range(len(words))],
                            },
                        }
                    )
            if not body.get("continue", False):
                await ws.send_json(
                    {"type": "done", "done": True, "status_code": 206, "context_id": context_id}
                )
        return ws

    app = web.Application()
    app.router.add_get("/tts/websocket", websocket)
    return FakeCartesia(await aiohttp_server(app), sockets)


@dataclass
class FakeOpenAI:
    server: TestServer
    completions: list[dict[str, Any]]
    """Each chat completion request's JSON body."""
    authorizations: list[str | None]

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("/v1"))


def sse(data: object) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


@dataclass(frozen=True)
class Cut:
    """An answer whose stream drops after `words`: the rest of the reply never comes."""

    words: str


# What a scripted OpenAI answers a chat completion with: words, a tool call (its name and
# arguments), an HTTP error status (with OpenAI's error body), or words cut off.
Answer = str | tuple[str, str] | int | Cut
OPENAI_ERRORS: dict[int, dict[str, str]] = {
    401: {"message": "Incorrect API key provided", "code": "invalid_api_key"},
    500: {"message": "The server had an error"},
}


async def stream_answer(
    request: web.Request, body: dict[str, Any], number: int, answer: Answer
) -> web.StreamResponse:
    """`answer` to the chat completion `body` (request `number`) as OpenAI streams it: the
    role, the words or the tool call, the finish reason and `[DONE]`."""
    if isinstance(answer, int):
        error = OPENAI_ERRORS.get(answer, {"message": f"HTTP {answer}"})
        return web.json_response({"error": error}, status=answer)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base: dict[str, Any] = {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": body["model"],
    }

    async def send(delta: dict[str, Any], finish: str | None = None) -> None:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        await response.write(sse(base | {"choices": [choice]}))

    await send({"role": "assistant", "content": ""})
    if isinstance(answer, Cut):  # the first words, then the connection drops
        await send({"content": answer.words})
        await asyncio.sleep(0.3)
        assert request.transport is not None
        request.transport.close()
        return response
    if isinstance(answer, str):
        if answer:
            await send({"content": answer})
        await send({}, "stop")
    else:
        name, arguments = answer
        function = {"name": name, "arguments": arguments}
        call = {"index": 0, "id": "call_1", "type": "function", "function": function}
        await send({"tool_calls": [call]})
        await send({}, "tool_calls")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def scripted_openai(
    aiohttp_server: AiohttpServer,
    script: Sequence[Answer] | Callable[[int], Answer],
    *,
    held: int = 0,
    release: asyncio.Event | None = None,
) -> FakeOpenAI:
    """OpenAI's chat completions answering request number n (from 0) with `script[n]` (or
    `script(n)`); the answer to request number `held` (from 1) waits for `release`."""
    completions: list[dict[str, Any]] = []
    answer_for = script if callable(script) else script.__getitem__

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        completions.append(body)
        number = len(completions)
        if number == held and release is not None:
            await release.wait()
        return await stream_answer(request, body, number, answer_for(number - 1))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return FakeOpenAI(await aiohttp_server(app), completions, [])


async def fake_openai(
    aiohttp_server: AiohttpServer,
    reply: Callable[[dict[str, Any]], str],
    refuse: Callable[[], web.Response | None] | None = None,
) -> FakeOpenAI:
    """OpenAI's chat completions: `reply(request)` streamed back in three pieces as
    `chat.completion.chunk`s (role, content, finish_reason, then the usage the plugin asks
    for with stream_options), and `[DONE]`. `GET /v1/models` answers the session's pre-warm."""
    completions: list[dict[str, Any]] = []
    authorizations: list[str | None] = []

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        completions.append(body)
        authorizations.append(request.headers.get("Authorization"))
        if refuse is not None and (refused := refuse()) is not None:
            return refused
        text = reply(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{len(completions)}",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": body["model"],
            "system_fingerprint": "fp_wire",
        }

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        third = max(1, len(text) // 3)
        pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
        await response.write(sse(base | {"choices": [choice({"role": "assistant"})]}))
        for piece in pieces:
            await response.write(sse(base | {"choices": [choice({"content": piece})]}))
        await response.write(sse(base | {"choices": [choice({}, "stop")]}))
        usage = {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}
        await response.write(sse(base | {"choices": [], "usage": usage}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(_request: web.Request) -> web.Response:
        model = {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "openai"}
        return web.json_response({"object": "list", "data": [model]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    return FakeOpenAI(await aiohttp_server(app), completions, authorizations)


@dataclass
class DeepgramSocket:
    query: dict[str, str]
    authorization: str | None
    audio_bytes: int = 0
    controls: list[str] = field(default_factory=list)


@dataclass
class FakeDeepgram:
    server: TestServer
    sockets: list[DeepgramSocket]

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1/listen"))


async def fake_deepgram(
    aiohttp_server: AiohttpServer, heard: Callable[[dict[str, str]], str]
) -> FakeDeepgram:
    """Deepgram's live recognition: once 0.2 s of audio has arrived, one final `Results`
    (speech_final) whose transcript is `heard(query)`; `CloseStream` gets the `Metadata`
    message and the close, as Deepgram ends a stream."""
    sockets: list[DeepgramSocket] = []

    async def listen(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = DeepgramSocket(dict(request.query), request.headers.get("Authorization"))
        sockets.append(conn)
        bytes_per_s = int(conn.query["sample_rate"]) * 2 * int(conn.query["channels"])
        answered = False
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                conn.audio_bytes += len(msg.data)
                if not answered and conn.audio_bytes >= bytes_per_s // 5:
                    answered = True
                    text = heard(conn.query)
                    words = [
                        {
                            "word": w.lower().strip(".,?!"),
                            "start": 0.05 + 0.1 * i,
                            "end": 0.15 + 0.1 * i,
                            "confidence": 0.97,
                            "punctuated_word": w,
                        }
                        for i, w in enumerate(text.split())
                    ]
                    await ws.send_json(
                        {
                            "type": "Results",
                            "channel_index": [0, 1],
                            "duration": 0.2,
                            "start": 0.0,
                            "is_final": True,
                            "speech_final": True,
                            "from_finalize": False,
                            "channel": {
                                "alternatives": [
                                    {"transcript": text, "confidence": 0.97, "words": words}
                                ]
                            },
                            "metadata": {
                                "request_id": f"dg-req-{len(sockets)}",
                                "model_info": {
                                    "name": "general-nova-3",
                                    "version": "2025-01-01.0",
                                    "arch": "nova-3",
                                },
                                "model_uuid": "00000000-0000-0000-0000-000000000003",
                            },
                        }
                    )
            elif msg.type == WSMsgType.TEXT:
                control = json.loads(msg.data)["type"]
                conn.controls.append(control)
                if control == "CloseStream":
                    await ws.send_json(
                        {
                            "type": "Metadata",
                            "request_id": f"dg-req-{len(sockets)}",
                            "duration": conn.audio_bytes / bytes_per_s,
                            "channels": 1,
                        }
                    )
                    await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/v1/listen", listen)
    return FakeDeepgram(await aiohttp_server(app), sockets)


# ------------------------------------------------------------------------- the agent's parts


def settings_for(openai_stand_in: FakeOpenAI | None = None) -> Settings:
    return Settings(
        openai_api_key="sk-wire-test",
        deepgram_api_key="dg-wire-test",
        cartesia_api_key="ca-wire-test",
        openai_model="gpt-4o-mini",
        cartesia_voice_id=VOICE,
        openai_base_url=openai_stand_in.base_url if openai_stand_in else None,
    )


def point_tts(tts: object, stand_in: FakeCartesia) -> cartesia.TTS:
    """The call's TTS (as the agent built it) speaking to the stand-in: only its base URL."""
    assert isinstance(tts, cartesia.TTS)
    tts._opts.base_url = stand_in.base_url
    return tts


def point_stt(stt: object, stand_in: FakeDeepgram) -> deepgram.STT:
    """The call's STT (as the agent built it) listening through the stand-in."""
    assert isinstance(stt, deepgram.STT)
    stt._opts.endpoint_url = stand_in.url
    return stt


def caller_named(request: dict[str, Any]) -> str:
    """The callee the request's system instructions name (as `build_instructions` says it)."""
    system = [m["content"] for m in request["messages"] if m["role"] in ("system", "developer")]
    said = r'You are on an outbound phone call with the callee named ("(?:[^"\\]|\\.)*")\. '
    names = set(re.findall(said, "\n".join(system)))
    assert len(names) == 1, names
    return str(json.loads(names.pop()))


def greeting_for(request: dict[str, Any]) -> str:
    return f"Hello {caller_named(request)}, this is your call."


@pytest.fixture
async def http() -> AsyncIterator[None]:
    """The plugins' shared HTTP session, as a job has it (livekit-agents' http_context)."""
    async with http_context.open():
        yield


# ----------------------------------------------------------------------------------- tests


async def speak(tts: cartesia.TTS, text: str) -> list[rtc.AudioFrame]:
    """The call's TTS as the session drives it: a stream, text pushed in, input ended."""
    frames: list[rtc.AudioFrame] = []
    async with asyncio.timeout(TIMEOUT_S), tts.stream() as stream:
        stream.push_text(text)
        stream.end_input()
        async for audio in stream:
            frames.append(audio.frame)
    return frames


@pytest.mark.usefixtures("loopback_only", "http")
async def test_cartesia_gets_the_calls_language_emotion_voice_and_text(
    aiohttp_server: AiohttpServer,
) -> None:
    stand_in = await fake_cartesia(aiohttp_server)
    settings = settings_for()
    plan = plan_session(CARLOS, settings, call_id=CARLOS.call_id)
    tts = point_tts(build_tts(plan, settings), stand_in)
    try:
        frames = await speak(tts, "Hola Carlos García, le llamo por su pedido.")
    finally:
        await tts.aclose()

    [conn] = stand_in.sockets
    assert conn.api_key == "ca-wire-test"
    assert conn.query == {"cartesia_version": "2025-04-16"}
    first = conn.requests[0]
    assert first["model_id"] == "sonic-3"
    assert first["voice"] == {"mode": "id", "id": VOICE}
    assert first["language"] == "es"
    # sonic-3 takes the emotion in generation_config, one lowercase name: Empathetic's.
    assert first["generation_config"] == {"emotion": "sympathetic"}
    assert "__experimental_controls" not in first["voice"]
    assert first["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": 24000,
    }
    assert first["add_timestamps"] is True  # Spanish has Cartesia's word timestamps
    for request in conn.requests:  # every request of the context says the same
        assert {k: v for k, v in request.items() if k not in ("transcript", "continue")} == {
            k: v for k, v in first.items() if k not in ("transcript", "continue")
        }
    assert conn.requests[-1]["continue"] is False
    assert " ".join(conn.transcript().split()) == "Hola Carlos García, le llamo por su pedido."

    # The stand-in's PCM comes back as the call's audio, every sample of it.
    assert frames and all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
    assert sum(f.samples_per_channel for f in frames) * 2 == conn.pcm_sent > 0


@pytest.mark.usefixtures("loopback_only")
async def test_openai_gets_the_calls_instructions_and_model(
    aiohttp_server: AiohttpServer,
) -> None:
    stand_in = await fake_openai(aiohttp_server, greeting_for)
    settings = settings_for(stand_in)
    plan = plan_session(CARLOS, settings, call_id=CARLOS.call_id)
    llm = build_llm(plan, settings)
    assert isinstance(llm, openai.LLM)
    assert llm.provider == f"127.0.0.1:{stand_in.server.port}"  # OPENAI_BASE_URL's host
    # The conversation as the agent holds it: its instructions (the plan's), the callee's turn.
    chat_ctx = ChatContext.empty()
    chat_ctx.add_message(role="system", content=plan.instructions)
    chat_ctx.add_message(role="user", content="¿Diga?")
    try:
        async with asyncio.timeout(TIMEOUT_S), llm.chat(chat_ctx=chat_ctx) as stream:
            text = "".join([c.delta.content async for c in stream if c.delta and c.delta.content])
    finally:
        await llm.aclose()

    assert text == "Hello Carlos García, this is your call."
    [request] = stand_in.completions
    assert stand_in.authorizations == ["Bearer sk-wire-test"]
    assert request["model"] == "gpt-4o-mini"
    assert request["stream"] is True
    system, user = request["messages"]
    assert system["role"] == "system" and system["content"] == plan.instructions
    assert system["content"].startswith(
        "Eres un asistente de ventas. Ayuda al cliente con su pedido."
    )
    assert (
        'You are on an outbound phone call with the callee named "Carlos García".'
        in system["content"]
    )
    assert "Speak Spanish for the whole call" in system["content"]
    assert "Tone: empathetic" in system["content"]
    assert "Call context: pedido: A-1234" in system["content"]
    assert user == {"role": "user", "content": "¿Diga?"}


async def listen(
    stt: deepgram.STT, seconds: float = 0.5
) -> tuple[list[agents_stt.SpeechEvent], int]:
    """The call's STT as the session drives it: 20 ms frames of 16 kHz audio pushed into a
    stream until a final transcript comes back."""
    events: list[agents_stt.SpeechEvent] = []
    pushed = 0
    async with asyncio.timeout(TIMEOUT_S), stt.stream() as stream:
        samples = 320
        tone = pcm_tone(samples / 16000, 16000)
        for _ in range(int(seconds / 0.02)):
            stream.push_frame(rtc.AudioFrame(tone, 16000, 1, samples))
            pushed += len(tone)
        stream.flush()
        async for event in stream:
            events.append(event)
            if event.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT:
                break
        stream.end_input()
    return events, pushed


def heard_in(query: dict[str, str]) -> str:
    return {"es": "Sí, dígame.", "en-US": "Yes, speaking."}[query["language"]]


@pytest.mark.usefixtures("loopback_only", "http")
async def test_deepgram_gets_the_calls_language_and_model(aiohttp_server: AiohttpServer) -> None:
    stand_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for()
    plan = plan_session(CARLOS, settings, call_id=CARLOS.call_id)
    stt = point_stt(build_stt(plan, settings), stand_in)
    events, pushed = await listen(stt)

    [conn] = stand_in.sockets
    assert conn.authorization == "Token dg-wire-test"
    assert conn.query["language"] == "es"
    assert conn.query["model"] == "nova-3"
    assert (conn.query["encoding"], conn.query["sample_rate"], conn.query["channels"]) == (
        "linear16",
        "16000",
        "1",
    )
    assert conn.audio_bytes > 0 and conn.audio_bytes <= pushed
    finals = [e for e in events if e.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert [e.alternatives[0].text for e in finals] == ["Sí, dígame."]
    assert finals[0].alternatives[0].language == "es"


@pytest.mark.usefixtures("loopback_only", "http")
@pytest.mark.parametrize(("opt_out", "sent"), [(None, "true"), ("0", "false")])
async def test_deepgram_is_told_not_to_keep_the_callees_voice(
    aiohttp_server: AiohttpServer, opt_out: str | None, sent: str
) -> None:
    """Deepgram keeps a request's audio to train its models unless `mip_opt_out=true`: by
    default every call's recognition says so (DEEPGRAM_MIP_OPT_OUT=0 takes part)."""
    stand_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for()
    if opt_out is not None:
        settings = replace(
            settings,
            deepgram_mip_opt_out=settings_from_env(
                {"DEEPGRAM_MIP_OPT_OUT": opt_out}
            ).deepgram_mip_opt_out,
        )
    plan = plan_session(CARLOS, settings, call_id=CARLOS.call_id)
    await listen(point_stt(build_stt(plan, settings), stand_in))

    [conn] = stand_in.sockets
    assert conn.query["mip_opt_out"] == sent


class PhoneLine(io.AudioOutput):
    """Where a session's speech goes in place of the phone line: counted."""

    def __init__(self) -> None:
        super().__init__(
            label="line", capabilities=io.AudioOutputCapabilities(pause=False), sample_rate=24000
        )
        self.samples = 0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self.samples += frame.samples_per_channel

    def flush(self) -> None:
        super().flush()
        self.on_playback_finished(playback_position=0.0, interrupted=False)

    def clear_buffer(self) -> None:
        pass


EXPECTED = {  # what each call's requests must carry, and only they
    "Alice Smith": {"language": "en", "stt_language": "en-US", "emotion": "neutral"},
    "Carlos García": {"language": "es", "stt_language": "es", "emotion": "sympathetic"},
}


def callee_in(text: str) -> str:
    """The one callee `text` names (failing if it names both: one call's words in another's)."""
    named = [name for name in EXPECTED if name in text]
    assert len(named) == 1, f"{named}: {text[:300]!r}"
    return named[0]


@dataclass
class CallOnTheWire:
    plan: SessionPlan
    line: PhoneLine
    heard: list[agents_stt.SpeechEvent]


async def answered_call(
    config: CallConfig, settings: Settings, cartesia_in: FakeCartesia, deepgram_in: FakeDeepgram
) -> CallOnTheWire:
    """A call's real session (`build_session`) greeting its callee, then its STT listening."""
    plan = plan_session(config, settings, call_id=config.call_id, source="config.json")
    session, agent = build_session(plan, settings, NullControl())
    tts, stt = point_tts(session.tts, cartesia_in), point_stt(session.stt, deepgram_in)
    line = PhoneLine()
    session.output.audio = line
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await session.start(agent)
            await agent.greet()
        heard, _ = await listen(stt)
    finally:
        await session.aclose()
        # Not closed with the session: its pooled websocket (a job's process ends there).
        await tts.aclose()
    return CallOnTheWire(plan, line, heard)


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_calls_first_message_is_spoken_as_is(aiohttp_server: AiohttpServer) -> None:
    """A call with a first_message greets with it, word for word, through Cartesia alone (in
    the call's language and emotion): no LLM round trip."""
    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    first = "Hola Carlos García, le llamo de la tienda por su pedido A-1234."
    config = CallConfig.create(
        CARLOS.caller_name,
        CARLOS.agent_instructions,
        CARLOS.tts_language,
        CARLOS.tts_emotion,
        call_id="call-f1257000003",
        options=CallOptions(first_message=first),
    )
    call = await answered_call(config, settings_for(openai_in), cartesia_in, deepgram_in)

    assert openai_in.completions == []
    [conn] = [c for c in cartesia_in.sockets if c.requests]
    assert " ".join(conn.transcript().split()) == first
    assert {r["language"] for r in conn.requests} == {"es"}
    assert {r["generation_config"]["emotion"] for r in conn.requests} == {"sympathetic"}
    assert call.line.samples * 2 == conn.pcm_sent > 0


@pytest.mark.usefixtures("loopback_only", "http")
async def test_two_calls_at_once_each_send_only_their_own_parameters(
    aiohttp_server: AiohttpServer,
) -> None:
    """Two calls' real sessions in one process, at once (one shared OpenAI client): each
    greeting is asked of OpenAI with that call's instructions, spoken by Cartesia in that
    call's language and emotion, reaches that call's line, and each call's STT listens in its
    language."""
    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for(openai_in)

    calls = await asyncio.gather(
        *(answered_call(c, settings, cartesia_in, deepgram_in) for c in (ALICE, CARLOS))
    )
    plans = {c.plan.caller_name: c.plan for c in calls}

    # OpenAI: one greeting request per call, with that call's instructions and nobody else's.
    assert len(openai_in.completions) == 2
    assert set(openai_in.authorizations) == {"Bearer sk-wire-test"}
    asked = set()
    for request in openai_in.completions:
        name = callee_in(json.dumps(request["messages"], ensure_ascii=False))
        asked.add(name)
        contents = [m["content"] for m in request["messages"]]
        assert request["model"] == "gpt-4o-mini"
        assert plans[name].instructions in contents
        assert any(plans[name].greeting in c for c in contents)
    assert asked == set(EXPECTED)

    # Cartesia: each greeting in its own call's language and emotion, on its own socket.
    spoken = set()
    for conn in cartesia_in.sockets:
        if not conn.requests:  # a pre-warmed socket no call used
            continue
        name = callee_in(conn.transcript())
        spoken.add(name)
        assert " ".join(conn.transcript().split()) == f"Hello {name}, this is your call."
        for request in conn.requests:
            assert request["language"] == EXPECTED[name]["language"]
            assert request["generation_config"] == {"emotion": EXPECTED[name]["emotion"]}
            assert request["voice"] == {"mode": "id", "id": VOICE}
    assert spoken == set(EXPECTED)

    # Each call's line got the audio of its greeting.
    for c in calls:
        assert c.line.samples > 0, c.plan.caller_name

    # Deepgram: each call listens in its own language, and hears what was said on its line.
    # (each session opens its own stream too, idle here: no audio input)
    assert {conn.query["model"] for conn in deepgram_in.sockets} == {"nova-3"}
    assert {conn.query["language"] for conn in deepgram_in.sockets} == {"en-US", "es"}
    listened = sorted(conn.query["language"] for conn in deepgram_in.sockets if conn.audio_bytes)
    assert listened == ["en-US", "es"]
    for c in calls:
        finals = [e for e in c.heard if e.type == agents_stt.SpeechEventType.FINAL_TRANSCRIPT]
        expected = heard_in({"language": EXPECTED[c.plan.caller_name]["stt_language"]})
        assert [e.alternatives[0].text for e in finals] == [expected]


@pytest.mark.usefixtures("loopback_only", "http")
async def test_markup_in_a_callees_name_is_not_sent_to_cartesia(
    aiohttp_server: AiohttpServer,
) -> None:
    """Cartesia acts on the SSML-like tags and bracketed cues in the text it speaks, and the
    LLM greets the callee by the name it is given, as written (the stand-in does, too): a
    name from a CSV row or a lead form holding `<break time="30s"/>` or an emotion tag put 30
    s of silence, or an angry voice, in the greeting. The name reaches the LLM, and so
    Cartesia, as plain words."""
    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    config = CallConfig.create(
        'Alice<break time="30s"/> <emotion value="angry"/>[laughter]<spell>Smith</spell>'
        " <<s|m|ɪ|θ>>",
        ALICE.agent_instructions,
        "en",
        "Neutral",
        call_id="call-3a7c0000004",
    )
    call = await answered_call(config, settings_for(openai_in), cartesia_in, deepgram_in)

    [request] = openai_in.completions
    assert "<" not in json.dumps(request["messages"]) and "[laughter]" not in json.dumps(
        request["messages"]
    )
    [conn] = [c for c in cartesia_in.sockets if c.requests]
    assert " ".join(conn.transcript().split()) == "Hello Alice Smith, this is your call."
    assert call.plan.caller_name == "Alice Smith"


# ---------------------------------------------------------------- providers that never answer


async def openai_never_answering(aiohttp_server: AiohttpServer) -> tuple[FakeOpenAI, list[float]]:
    """OpenAI taking each chat completion request (the stream's headers sent) and never
    sending a chunk: the times its requests came."""
    asked: list[float] = []

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        await request.json()
        asked.append(asyncio.get_running_loop().time())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(3600)
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    return FakeOpenAI(await aiohttp_server(app), [], []), asked


async def cartesia_sending_no_audio(
    aiohttp_server: AiohttpServer,
    on_context: Callable[[web.WebSocketResponse, str], Awaitable[None]],
) -> FakeCartesia:
    """Cartesia's websocket sending no audio: `on_context(ws, context_id)` once for each
    context's first generation request, and nothing else."""

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        contexts: set[str] = set()
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                context_id = json.loads(msg.data)["context_id"]
                if context_id not in contexts:
                    contexts.add(context_id)
                    await on_context(ws, context_id)
        return ws

    app = web.Application()
    app.router.add_get("/tts/websocket", websocket)
    return FakeCartesia(await aiohttp_server(app), [])


async def cartesia_never_answering(
    aiohttp_server: AiohttpServer,
) -> tuple[FakeCartesia, list[float]]:
    """Cartesia's websocket taking each generation request and never sending audio (nor
    `done`): the times each context's first request came."""
    asked: list[float] = []

    async def note(_ws: web.WebSocketResponse, _context_id: str) -> None:
        asked.append(asyncio.get_running_loop().time())

    return await cartesia_sending_no_audio(aiohttp_server, note), asked


def close_awaited(session: AgentSession[None]) -> asyncio.Future[CloseEvent]:
    """The session's close event, once it closes (the first, should it close again)."""
    closed: asyncio.Future[CloseEvent] = asyncio.get_running_loop().create_future()

    def on_close(event: CloseEvent) -> None:
        if not closed.done():
            closed.set_result(event)

    session.on("close", on_close)
    return closed


async def greet_until_closed(
    openai_in: FakeOpenAI, cartesia_in: FakeCartesia, deepgram_in: FakeDeepgram
) -> tuple[Any, float, PhoneLine]:
    """ALICE's session on the stand-ins, greeting, until it closes (15 s at most): its close
    event, the seconds from the greeting to the close, and what reached the phone line."""
    settings = settings_for(openai_in)
    plan = plan_session(ALICE, settings, call_id=ALICE.call_id, source="config.json")
    session, agent = build_session(plan, settings, NullControl())
    tts = point_tts(session.tts, cartesia_in)
    point_stt(session.stt, deepgram_in)
    line = PhoneLine()
    session.output.audio = line
    closed = close_awaited(session)
    try:
        await session.start(agent)
        agent.greet()
        started = asyncio.get_running_loop().time()
        event = await asyncio.wait_for(closed, 15)
        return event, asyncio.get_running_loop().time() - started, line
    finally:
        await session.aclose()
        await tts.aclose()


@pytest.mark.parametrize("silent", ["openai", "cartesia"])
@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_provider_that_never_answers_ends_the_call_within_seconds(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch, silent: str
) -> None:
    """OpenAI or Cartesia taking the greeting's request and never answering: each attempt
    gave up after livekit-agents' default 10 s (the plugins give it to their requests, over
    the OpenAI client's 5 s read timeout), tried 3 more times 2 s apart, and the callee heard
    silence for 44 s before the session closed and the call ended. Now each attempt waits
    PROVIDER_TIMEOUT_S (5 s; 0.4 s here to keep the test short), PROVIDER_RETRIES (2) more
    times, PROVIDER_RETRY_INTERVAL_S (2 s; 0.2 s here) apart: the session closes on the
    provider's timeout within about 17 s (here 1.5 s)."""
    from livekit.agents import APITimeoutError, CloseReason
    from livekit.agents.llm import LLMError
    from livekit.agents.tts import TTSError

    from agent import session as session_module

    monkeypatch.setattr(session_module, "PROVIDER_TIMEOUT_S", 0.4)
    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)
    if silent == "openai":
        openai_in, asked = await openai_never_answering(aiohttp_server)
        cartesia_in = await fake_cartesia(aiohttp_server)
    else:
        openai_in = await fake_openai(aiohttp_server, greeting_for)
        cartesia_in, asked = await cartesia_never_answering(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    event, waited, line = await greet_until_closed(openai_in, cartesia_in, deepgram_in)

    assert event.reason == CloseReason.ERROR
    assert isinstance(event.error, LLMError if silent == "openai" else TTSError)
    assert isinstance(event.error.error, APITimeoutError)
    assert len(asked) == 1 + session_module.PROVIDER_RETRIES == 3
    # three attempts of 0.4 s, the retries 0.1 s and 0.2 s apart (livekit-agents' own
    # timeout, 10 s an attempt, would outlast the 15 s wait for the close)
    assert 1.2 <= waited < 10.0
    # OpenAI failing the greeting: the callee hears the call's apology (TTS only) before the
    # line drops (agent.session.CallSession); Cartesia failing it: nothing can be said.
    if silent == "openai":
        [conn] = [c for c in cartesia_in.sockets if c.requests]
        assert conn.transcript().strip() == apology_for("en")
        assert line.samples > 0
    else:
        assert line.samples == 0


async def cartesia_ending_without_audio(aiohttp_server: AiohttpServer) -> FakeCartesia:
    """Cartesia's websocket answering each context's first request with its `done` (the
    context is over), and no audio. (Its refusal, an `error` that is `done` too, is raised
    as Cartesia's status now: tests/unit/test_GJ_cartesia_refusals.py.)"""

    async def end(ws: web.WebSocketResponse, context_id: str) -> None:
        done = {"type": "done", "context_id": context_id, "status_code": 206}
        await ws.send_json(done | {"done": True})

    return await cartesia_sending_no_audio(aiohttp_server, end)


@pytest.mark.usefixtures("loopback_only", "http")
async def test_what_the_agent_could_not_say_stays_out_of_the_log(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Cartesia sending no audio for a greeting (here it ends the request with none):
    livekit-agents logged the text it could not speak, whole, at WARNING for each retry and
    at ERROR as the session closed ("no audio frames were pushed for text: Hello Alice
    Smith, ..."): the callee's name, and whatever the agent repeated of what they said. The
    log says how long the text was, not what it said."""
    from livekit.agents import CloseReason
    from livekit.agents.tts import TTSError

    from agent import worker

    worker.keep_callee_words_out_of_logs()
    openai_in = await fake_openai(aiohttp_server, greeting_for)
    cartesia_in = await cartesia_ending_without_audio(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    event, _, _ = await greet_until_closed(openai_in, cartesia_in, deepgram_in)

    assert event.reason == CloseReason.ERROR and isinstance(event.error, TTSError)
    said = "Hello Alice Smith, this is your call."
    logged = [r.getMessage() for r in caplog.records if r.name == "livekit.agents"]
    unspoken = [m for m in logged if "no audio frames were pushed for text" in m]
    assert len(unspoken) == 3  # the two retries' WARNINGs, the session's closing ERROR
    assert unspoken[0] == (
        f"failed to synthesize speech: no audio frames were pushed for text: [{len(said)} chars,"
        " left out of the log], retrying in 0.1s"
    )
    assert unspoken[-1] == (
        "AgentSession is closing due to unrecoverable error: no audio frames were pushed for"
        f" text: [{len(said)} chars, left out of the log]"
    )
    assert "Alice" not in caplog.text


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_short_openai_rate_limit_does_not_end_the_call(
    aiohttp_server: AiohttpServer,
) -> None:
    """OpenAI answering 429 for a moment (its tokens-per-minute limit: "Please try again in
    1.5s"): the greeting's request was tried 0.1 s and 1 s after its first refusal, and
    the session closed, ending the call, 1.1 s after it (livekit-agents' own 2 s apart had
    ridden out 4 s). Tried again 2 s apart, the greeting is spoken once the limit lifts."""

    refused_until: list[float] = []

    def rate_limited() -> web.Response | None:
        now = asyncio.get_running_loop().time()
        if not refused_until:
            refused_until.append(now + 1.5)
        if now >= refused_until[0]:
            return None
        error = {
            "message": "Rate limit reached for gpt-4o-mini on tokens per min (TPM): Please"
            " try again in 1.5s.",
            "type": "tokens",
            "code": "rate_limit_exceeded",
        }
        return web.json_response({"error": error}, status=429)

    openai_in = await fake_openai(aiohttp_server, greeting_for, rate_limited)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    settings = settings_for(openai_in)
    plan = plan_session(ALICE, settings, call_id=ALICE.call_id, source="config.json")
    session, agent = build_session(plan, settings, NullControl())
    tts = point_tts(session.tts, cartesia_in)
    point_stt(session.stt, deepgram_in)
    line = PhoneLine()
    session.output.audio = line
    closed: list[CloseEvent] = []
    session.on("close", closed.append)
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        assert closed == []
    finally:
        await session.aclose()
        await tts.aclose()

    assert len(openai_in.completions) == 3  # refused twice, then answered
    assert line.samples > 0
