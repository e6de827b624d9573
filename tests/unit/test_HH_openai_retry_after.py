"""OpenAI's Retry-After on a refusal (429, 503) is read: the plugin drops the answer's headers,
and the agent asked again 0.1 s and 2 s later whatever OpenAI had said. A rate limit of 3 s
(`retry-after: 3`) then failed the greeting's three tries within 2.1 s and the callee heard
the apology, though a 3 s wait would have been answered; and one of 30 s was asked twice more
to no end (each try counting against the same limit), the log saying nothing of the wait.

Now a short wait (RETRY_AFTER_MAX_S at most) is waited out before the next try, and a longer
one is not tried again, with a WARNING naming the wait. The real session on local stand-ins
speaking OpenAI's wire format (tests/unit/test_agent_wire.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate

import pytest
from aiohttp import web
from livekit.agents import CloseEvent
from pytest_aiohttp import AiohttpServer

from agent.apology import apology_for
from agent.plan import plan_session
from agent.session import build_session
from tests.helpers import NullControl
from tests.unit.test_agent_wire import (
    ALICE,
    FakeCartesia,
    FakeOpenAI,
    PhoneLine,
    fake_cartesia,
    fake_deepgram,
    fake_openai,
    greeting_for,
    heard_in,
    point_stt,
    point_tts,
    settings_for,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GN_provider_fails_mid_call import spoken

RATE_LIMITED = {
    "message": "Rate limit reached for gpt-4o-mini on requests per min (RPM).",
    "type": "requests",
    "code": "rate_limit_exceeded",
}


def limited_for(seconds: float, headers: dict[str, str]) -> tuple[list[float], object]:
    """A refusal (429, `headers`) to every request for `seconds` from the first one."""
    until: list[float] = []

    def refuse() -> web.Response | None:
        now = asyncio.get_running_loop().time()
        if not until:
            until.append(now + seconds)
        if now >= until[0]:
            return None
        return web.json_response({"error": RATE_LIMITED}, status=429, headers=headers)

    return until, refuse


async def greet(
    aiohttp_server: AiohttpServer, refuse: object
) -> tuple[FakeOpenAI, FakeCartesia, list[CloseEvent], float]:
    openai_in = await fake_openai(aiohttp_server, greeting_for, refuse)  # type: ignore[arg-type]
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
    started = time.monotonic()
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 15)
        took = time.monotonic() - started
        await asyncio.sleep(0.3)  # a close on the failure, if any
        ended = list(closed)
    finally:
        await session.aclose()
        await tts.aclose()
    return openai_in, cartesia_in, ended, took


@pytest.mark.parametrize(
    "headers", [{"retry-after": "3"}, {"retry-after-ms": "3000"}], ids=["seconds", "ms"]
)
@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_short_retry_after_is_waited_out(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture, headers: dict[str, str]
) -> None:
    caplog.set_level(logging.INFO, "agent.openai_llm")
    _, refuse = limited_for(3.0, headers)
    openai_in, cartesia_in, closed, took = await greet(aiohttp_server, refuse)
    assert spoken(cartesia_in) == greeting_for(openai_in.completions[-1])
    assert closed == []
    assert len(openai_in.completions) == 2
    assert 2.9 < took < 6
    assert (
        f"call {ALICE.call_id}: OpenAI answered 429; asked again in 3.0 s, as it asked"
        " (Retry-After)" in caplog.text
    )


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_long_retry_after_is_apologised_for_at_once(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    _, refuse = limited_for(60.0, {"retry-after": "30"})
    openai_in, cartesia_in, closed, took = await greet(aiohttp_server, refuse)
    assert spoken(cartesia_in) == apology_for("en")
    assert len(openai_in.completions) == 1
    assert took < 2.5  # (start included) not after tries 0.1 s and 2.1 s later
    assert (
        f"call {ALICE.call_id}: OpenAI answered 429 and asked to wait 30 s before asking"
        " again, more than a callee waits (4 s): not asked again" in caplog.text
    )


def test_retry_after_reads_what_openai_and_http_say() -> None:
    from agent.openai_llm import retry_after

    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "0.5"}) == 0.5
    date = retry_after({"retry-after": formatdate(time.time() + 20, usegmt=True)})
    assert date is not None and 18 < date <= 20
    assert retry_after({"retry-after": formatdate(time.time() - 20, usegmt=True)}) == 0.0
    for nonsense in ("soon", "", "nan", "inf", "-3", "1e999"):
        assert retry_after({"retry-after": nonsense}) in (None, 0.0), nonsense
    assert retry_after({"retry-after-ms": "nan"}) is None
    assert retry_after({}) is None
