"""The apology meets the agent's own hang-up (end_call, add_to_do_not_call) whole, and no
voicemail box records one.

The callee says goodbye and the LLM calls end_call (or add_to_do_not_call); the goodbye it
is then asked for fails (OpenAI 500 past the retries): the apology is queued, and the
tool's hang-up ran as the failed goodbye ended, so the room was deleted as the apology
began: the callee heard "Sorry, we—" and the line drop (seen with the real session: the
hang-up 0.3 s after the callee's goodbye, the apology's 0.6 s said after it). Now the
hang-up waits for the apology, which ends with a goodbye. And once the LLM has found an
answering machine (its detected_answering_machine tool), a provider's failure ends the call
as before, without an apology for the recording.

The real session (`build_session`) on loopback stand-ins of OpenAI, Cartesia and Deepgram,
a line whose speech takes 0.6 s to play (tests/unit/test_GN_provider_fails_mid_call.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from livekit.agents import APIStatusError, CloseEvent, CloseReason
from livekit.agents.stt import STTError
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent.apology import apology_for
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_wire import (
    Answer,
    FakeOpenAI,
    close_awaited,
    scripted_openai,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GJ_empty_reply import wired_to
from tests.unit.test_GN_provider_fails_mid_call import SlowLine, spoken

GREETING = "Hello Alice, this is your coach."
APOLOGY = apology_for("en")


class TimedControl:
    """What the agent did to the call, and when (time.monotonic())."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, float]] = []

    async def set_outcome(self, outcome: str) -> None:
        self.actions.append((f"set_outcome {outcome}", time.monotonic()))

    async def hang_up(self) -> None:
        self.actions.append(("hang_up", time.monotonic()))

    def do_not_call(self) -> None:
        self.actions.append(("do_not_call", time.monotonic()))

    def when(self, action: str) -> float | None:
        return next((at for name, at in self.actions if name == action), None)


async def openai_calling(aiohttp_server: AiohttpServer, tool: str) -> FakeOpenAI:
    """OpenAI greeting, then answering the callee with a call of `tool` (no words), then
    answering 500 to every request (the tool's goodbye, past the retries)."""
    answers: list[Answer] = [GREETING, (tool, "{}")]
    return await scripted_openai(aiohttp_server, lambda n: answers[n] if n < 2 else 500)


async def call_until_closed(
    aiohttp_server: AiohttpServer, tool: str, callee_says: str, *, stt_fails: bool = False
) -> tuple[TimedControl, dict[str, float], CloseEvent, str]:
    """Alice greeted, then saying `callee_says` (the LLM answering it with `tool`), until
    the session closes: what the agent did, when the agent's turns were said, the close
    event, and all that was sent to Cartesia. With `stt_fails`, Deepgram fails for good
    once the tool has run."""
    openai_in = await openai_calling(aiohttp_server, tool)
    control = TimedControl()
    cartesia_in, session, agent, tts = await wired_to(
        aiohttp_server, openai_in, control, SlowLine()
    )
    said: dict[str, float] = {}

    def on_item(event: Any) -> None:
        if getattr(event.item, "role", None) == "assistant":
            said[event.item.text_content or ""] = time.monotonic()

    session.on("conversation_item_added", on_item)
    closed = close_awaited(session)
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        end_user_turn(session, callee_says)
        if stt_fails:
            await eventually(lambda: control.actions != [], "the tool", 10)
            lost = APIStatusError("connection closed", status_code=1011)
            failure = STTError(
                timestamp=time.time(), label="deepgram", error=lost, recoverable=False
            )
            session._on_error(failure)
        event = await asyncio.wait_for(closed, 20)
    finally:
        await session.aclose()
        await tts.aclose()
    return control, said, event, spoken(cartesia_in)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)


@pytest.mark.parametrize(
    ("tool", "callee_says"),
    [("end_call", "Thanks, bye."), ("add_to_do_not_call", "Please don't call me again.")],
)
@pytest.mark.usefixtures("loopback_only", "http")
async def test_the_agents_hang_up_waits_for_the_apology(
    aiohttp_server: AiohttpServer, tool: str, callee_says: str
) -> None:
    control, said, event, sent = await call_until_closed(aiohttp_server, tool, callee_says)

    assert event.reason == CloseReason.ERROR
    assert sent.endswith(APOLOGY)
    hung_up = control.when("hang_up")
    assert hung_up is not None and APOLOGY in said
    assert hung_up >= said[APOLOGY]  # the apology was said whole before the line dropped
    if tool == "add_to_do_not_call":
        assert control.when("do_not_call") is not None


@pytest.mark.usefixtures("loopback_only", "http")
async def test_no_apology_is_left_on_a_voicemail_box(aiohttp_server: AiohttpServer) -> None:
    """The LLM found a voicemail box; then Deepgram fails for good: the call ends at once,
    as before the apology, with nothing more said to the recording."""
    control, _said, event, sent = await call_until_closed(
        aiohttp_server,
        "detected_answering_machine",
        "Hi, this is Alice, leave a message after the beep.",
        stt_fails=True,
    )

    assert control.when("set_outcome voicemail") is not None
    assert event.reason == CloseReason.ERROR and isinstance(event.error, STTError)
    assert APOLOGY not in sent
