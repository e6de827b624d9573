"""A reply the callee cuts off is reported as what they heard of it, marked interrupted: not
the words the LLM wrote and the callee never heard (a guard: livekit-agents' transcript
synchronizer, which the job's RoomIO puts in front of the phone line, does this).

The real session (`build_session`) against local stand-ins (tests/unit/test_agent_wire.py):
a Cartesia whose audio lasts PER_WORD_S a word (with its word timestamps), a phone line that
plays it in real time."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from livekit import rtc
from livekit.agents.voice import io
from livekit.agents.voice.transcription import TranscriptSynchronizer
from pytest_aiohttp import AiohttpServer

from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_wire import (
    ALICE,
    FakeCartesia,
    PhoneLine,
    fake_deepgram,
    heard_in,
    pcm_tone,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GN_provider_fails_mid_call import Call, openai_failing_after_replies

GREETING = "Hello, this is your coach."
LONG = (
    "Hold the bat with both hands, keep your eyes on the ball, bend your knees a little and"
    " swing through."
)
PER_WORD_S = 0.25


async def cartesia_in_real_time(aiohttp_server: AiohttpServer) -> FakeCartesia:
    """Cartesia's websocket: PER_WORD_S of audio a word, and the words' timestamps."""

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        offsets: dict[str, float] = {}
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            body: dict[str, Any] = json.loads(msg.data)
            context = body["context_id"]
            words = body["transcript"].split()
            start = offsets.get(context, 0.0)
            said = {"done": False, "status_code": 206, "context_id": context}
            if words:
                pcm = pcm_tone(PER_WORD_S * len(words), body["output_format"]["sample_rate"])
                await ws.send_json(said | {"type": "chunk", "data": base64.b64encode(pcm).decode()})
                stamps = {
                    "words": words,
                    "start": [start + PER_WORD_S * i for i in range(len(words))],
                    "end": [start + PER_WORD_S * (i + 1) for i in range(len(words))],
                }
                await ws.send_json(said | {"type": "timestamps", "word_timestamps": stamps})
                offsets[context] = start + PER_WORD_S * len(words)
            if not body.get("continue", False):
                await ws.send_json(said | {"type": "done", "done": True})
        return ws

    app = web.Application()
    app.router.add_get("/tts/websocket", websocket)
    return FakeCartesia(await aiohttp_server(app), [])


class RealTimeLine(PhoneLine):
    """A phone line that buffers the speech and plays it in real time, as the room's audio
    output does: cleared, it says how much it had played."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: list[float] = []
        self._played = 0.0
        self._ended = False
        self._player: asyncio.Task[None] | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await io.AudioOutput.capture_frame(self, frame)
        self.samples += frame.samples_per_channel
        self._queue.append(frame.duration)
        if self._player is None:
            self._played, self._ended = 0.0, False
            self.on_playback_started(created_at=time.time())
            self._player = asyncio.get_running_loop().create_task(self._play())

    async def _play(self) -> None:
        while self._queue or not self._ended:
            if self._queue:
                duration = self._queue.pop(0)
                await asyncio.sleep(duration)
                self._played += duration
            else:
                await asyncio.sleep(0.005)
        self._player = None
        self.on_playback_finished(playback_position=self._played, interrupted=False)

    def flush(self) -> None:
        io.AudioOutput.flush(self)
        self._ended = True

    def clear_buffer(self) -> None:
        if self._player is None:
            return
        self._player.cancel()
        self._player = None
        self._queue.clear()
        self.on_playback_finished(playback_position=self._played, interrupted=True)


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_reply_cut_off_by_the_callee_keeps_only_what_was_said(
    aiohttp_server: AiohttpServer,
) -> None:
    openai_in = await openai_failing_after_replies(aiohttp_server, "500", [GREETING, LONG])
    cartesia_in = await cartesia_in_real_time(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    line = RealTimeLine()
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, line)
    # As the job's RoomIO wires the phone line (its text output synchronised by default).
    synchronizer = TranscriptSynchronizer(next_in_chain_audio=line, next_in_chain_text=None)
    call.session.output.audio = synchronizer.audio_output
    call.session.output.transcription = synchronizer.text_output
    try:
        await call.session.start(call.agent)
        await asyncio.wait_for(call.agent.greet().wait_for_playout(), 10)
        end_user_turn(call.session, "How do I hold the bat?")
        await eventually(lambda: call.session.agent_state == "speaking", "the reply", 10)
        await asyncio.sleep(1.0)  # about four of its nineteen words
        call.session.interrupt()  # what the callee speaking over it does
        await eventually(lambda: len(call.turns) >= 3, "the reply's turn", 10)
    finally:
        await call.aclose()

    turn = call.turns[2]
    assert (turn.role, turn.interrupted) == ("agent", True)
    assert LONG.startswith(turn.text)
    assert 2 <= len(turn.text.split()) <= 9, turn.text  # not the 19 words the LLM wrote
