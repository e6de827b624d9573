"""The apology after a provider's failure comes after what the agent is saying, and that can
be seconds of speech: OpenAI streams a reply far faster than it is said, so when its stream
is cut mid-reply most of the words received are still to be said (Deepgram lost during a
long reply alike). APOLOGY_TIMEOUT_S counted from the failure, the apology was cut short or
never said, and the line dropped in the middle of the reply's sentence. Now what is being
said goes on APOLOGY_WAITS_S at most, then is cut, and the apology has APOLOGY_TIMEOUT_S
from its own start.

The real session (`build_session`) on loopback stand-ins of OpenAI, Cartesia and Deepgram
(tests/unit/test_GN_provider_fails_mid_call.py's `Call`), on a line that plays each frame
in its own duration, as a phone line does, with Cartesia's audio as long as its words."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import CloseReason
from livekit.agents.llm import LLMError
from livekit.agents.voice import io
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent.apology import apology_for
from tests.unit.test_agent_wire import (
    ALICE,
    Cut,
    FakeCartesia,
    FakeOpenAI,
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    scripted_openai,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GN_provider_fails_mid_call import REPLIES, Call, spoken

SECONDS_PER_WORD = 0.1
# A reply of 48 words (4.8 s said) whose stream OpenAI cuts once it has sent them all.
LONG_REPLY = " ".join(["Keep your head still and watch the ball."] * 6)
APOLOGY = apology_for("en")
APOLOGY_SAID_S = SECONDS_PER_WORD * len(APOLOGY.split())


async def openai_cutting(aiohttp_server: AiohttpServer, cut_after: str) -> FakeOpenAI:
    """OpenAI saying REPLIES (the greeting, a reply), then for the next reply `cut_after`
    and the connection lost (the stream cut: the rest of the reply never comes)."""
    return await scripted_openai(
        aiohttp_server, lambda n: REPLIES[n] if n < len(REPLIES) else Cut(cut_after)
    )


async def cartesia_in_real_time(aiohttp_server: AiohttpServer) -> FakeCartesia:
    """Cartesia's websocket sending SECONDS_PER_WORD of audio for each word it is given."""
    return await fake_cartesia(aiohttp_server, seconds_per_word=SECONDS_PER_WORD)


class RealTimeLine(PhoneLine):
    """A phone line: each frame takes its own duration to play, and a speech cut off says
    how much of it was played (what its transcript keeps)."""

    def __init__(self) -> None:
        super().__init__()
        self._played_s = 0.0
        self._pending = False

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._pending = True
        seconds = frame.samples_per_channel / frame.sample_rate
        await asyncio.sleep(seconds)
        self._played_s += seconds

    def flush(self) -> None:
        io.AudioOutput.flush(self)
        self._finished(interrupted=False)

    def clear_buffer(self) -> None:
        self._finished(interrupted=True)

    def _finished(self, *, interrupted: bool) -> None:
        if not self._pending:
            return
        played, self._played_s, self._pending = self._played_s, 0.0, False
        self.on_playback_finished(playback_position=played, interrupted=interrupted)


async def cut_mid_reply(aiohttp_server: AiohttpServer) -> tuple[Call, float, Any]:
    """A call whose second reply OpenAI cuts after LONG_REPLY: the call, the seconds from
    that reply's request to the session's close, and the close event."""
    openai_in = await openai_cutting(aiohttp_server, LONG_REPLY)
    cartesia_in = await cartesia_in_real_time(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, RealTimeLine())
    call.cartesia = cartesia_in  # type: ignore[attr-defined]
    try:
        await call.talk()
        started = time.monotonic()
        event = await asyncio.wait_for(call.closed, 30)
        took = time.monotonic() - started
    finally:
        await call.aclose()
    return call, took, event


@pytest.fixture(autouse=True)
def short_apology_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """The apology (1.4 s here) has 3 s once its turn comes; retries are quick."""
    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)
    monkeypatch.setattr(session_module, "APOLOGY_TIMEOUT_S", 3.0)


@pytest.mark.usefixtures("loopback_only", "http")
async def test_the_apology_is_said_after_the_rest_of_a_cut_reply(
    aiohttp_server: AiohttpServer,
) -> None:
    """OpenAI's stream cut with 4.8 s of the reply's words still to say: they are said, then
    the apology, whole, then the line drops. Before, the 3 s counted from the failure ran
    out during the reply: no apology, and the reply cut mid-sentence."""
    call, took, event = await cut_mid_reply(aiohttp_server)

    assert event.reason == CloseReason.ERROR and isinstance(event.error, LLMError)
    assert spoken(call.cartesia).endswith(APOLOGY)  # type: ignore[attr-defined]
    said = [(t.role, t.text, t.interrupted) for t in call.turns[-2:]]
    assert said == [("agent", LONG_REPLY, True), ("agent", APOLOGY, False)]
    assert 4.8 + APOLOGY_SAID_S < took < 4.8 + APOLOGY_SAID_S + 3


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_long_rest_of_a_reply_is_cut_for_the_apology(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More of the reply left to say than APOLOGY_WAITS_S (1.5 s here): it is cut then, and
    the apology said whole; the line drops about 1.5 s + the apology after the failure."""
    monkeypatch.setattr(session_module, "APOLOGY_WAITS_S", 1.5, raising=False)
    call, took, event = await cut_mid_reply(aiohttp_server)

    assert event.reason == CloseReason.ERROR and isinstance(event.error, LLMError)
    (reply, apology) = call.turns[-2:]
    assert (reply.role, reply.interrupted) == ("agent", True)
    assert reply.text and LONG_REPLY.startswith(reply.text)
    assert (apology.role, apology.text, apology.interrupted) == ("agent", APOLOGY, False)
    assert took < 1.5 + APOLOGY_SAID_S + 2.5
