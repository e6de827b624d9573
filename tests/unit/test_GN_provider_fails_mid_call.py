"""A provider failing for good in the middle of a call: the callee hears the call's fixed
apology, in its language, before the line drops (OpenAI, Deepgram), or the call ends at
once (Cartesia: nothing left to say it with). Before, the callee heard nothing more and the
line went dead.

The real session (`build_session`) against local stand-ins of OpenAI, Cartesia and Deepgram
(tests/unit/test_agent_wire.py); the worker's own close handling (`_session_closed`)
writes the room's outcome."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any, cast

import pytest
from aiohttp import web
from livekit.agents import CloseEvent, CloseReason, JobContext
from livekit.agents.llm import LLMError
from livekit.agents.voice import io
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent import worker
from agent.apology import APOLOGIES, apology_for
from agent.plan import plan_session
from agent.reporting import ReportSender
from agent.results import TranscriptRecorder
from agent.session import build_session
from common.config_store.model import LANGUAGES, CallConfig
from common.contracts import TranscriptTurn
from common.text import has_spoken_word
from tests.helpers import NullControl
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_reporting import KEY, SECRET
from tests.unit.test_agent_wire import (
    ALICE,
    CARLOS,
    Answer,
    Cut,
    FakeCartesia,
    FakeOpenAI,
    PhoneLine,
    cartesia_sending_no_audio,
    close_awaited,
    fake_cartesia,
    fake_deepgram,
    heard_in,
    pcm_tone,
    point_stt,
    point_tts,
    scripted_openai,
    settings_for,
)
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_agent_worker import FakeJobContext, make_job

CALL_ID = "call-a11ce0000001"
REPLIES = ["Hello, this is your coach.", "Hold the bat with both hands."]
CUT_REPLY = "Keep your head still and watch the ball."


# How OpenAI fails once the replies are said: past the retries, a key rotated away, or the
# reply's stream cut after its first words.
FAILURES: dict[str, Answer] = {"500": 500, "401": 401, "cut": Cut(CUT_REPLY[:20])}


async def openai_failing_after_replies(
    aiohttp_server: AiohttpServer, how: str, replies: list[str] = REPLIES
) -> FakeOpenAI:
    """OpenAI's chat completions saying `replies` (the greeting, a reply), then failing every
    request as FAILURES[how] says."""
    return await scripted_openai(
        aiohttp_server, lambda n: replies[n] if n < len(replies) else FAILURES[how]
    )


async def cartesia_refusing_after_greeting(aiohttp_server: AiohttpServer) -> FakeCartesia:
    """Cartesia speaking the first context (the greeting), then refusing every other one
    (402: the account's credits spent mid-call)."""
    contexts: list[str] = []

    async def on_context(ws: web.WebSocketResponse, context_id: str) -> None:
        contexts.append(context_id)
        if len(contexts) == 1:
            pcm = pcm_tone(0.1, 24000)
            chunk = {"type": "chunk", "data": base64.b64encode(pcm).decode(), "done": False}
            await ws.send_json(chunk | {"status_code": 206, "context_id": context_id})
            await ws.send_json(
                {"type": "done", "done": True, "status_code": 206, "context_id": context_id}
            )
            return
        refusal = {
            "type": "error",
            "done": True,
            "status_code": 402,
            "title": "Insufficient credits",
            "context_id": context_id,
        }
        await ws.send_json(refusal)

    return await cartesia_sending_no_audio(aiohttp_server, on_context)


class SlowLine(PhoneLine):
    """A phone line whose speech takes HOLD_S to play out."""

    HOLD_S = 0.6

    def flush(self) -> None:
        io.AudioOutput.flush(self)
        asyncio.get_running_loop().call_later(
            self.HOLD_S,
            lambda: self.on_playback_finished(playback_position=self.HOLD_S, interrupted=False),
        )


class Call:
    """One answered call's real session on the stand-ins, its turns recorded as the worker
    records them."""

    def __init__(
        self,
        config: CallConfig,
        openai_in: FakeOpenAI,
        cartesia_in: FakeCartesia,
        deepgram_in: Any,
        line: PhoneLine,
    ) -> None:
        settings = settings_for(openai_in)
        self.plan = plan_session(config, settings, call_id=config.call_id, source="config.json")
        self.turns: list[TranscriptTurn] = []
        self.job = worker._Job(
            CALL_ID,
            ReportSender(None, CALL_ID, KEY, SECRET),
            TranscriptRecorder(self.turns.append),
        )
        self.job.recorder.start(time.time())
        self.job.end.answered = True
        session, self.agent = build_session(
            self.plan, settings, NullControl(), on_held_turn=self.job.recorder.add_message
        )
        self.session = session
        self.job.session = session
        self.tts = point_tts(session.tts, cartesia_in)
        point_stt(session.stt, deepgram_in)
        self.line = line
        session.output.audio = line
        session.on("conversation_item_added", self.job.recorder.on_item_added)
        self.closed = close_awaited(session)

    async def first_reply(self) -> None:
        """Greeted, the callee asks a question and the reply's turn is recorded."""
        await self.session.start(self.agent)
        await asyncio.wait_for(self.agent.greet().wait_for_playout(), 10)
        end_user_turn(self.session, "How do I hold the bat?")
        await eventually(lambda: len(self.turns) >= 3, "the first reply", 10)

    async def talk(self) -> None:
        """Greeted, the callee asks a question and hears the reply, then asks another."""
        await self.first_reply()
        end_user_turn(self.session, "And my stance?")

    async def outcome_on_the_room(self, event: CloseEvent) -> dict[str, Any]:
        """What the worker writes on the room once the session closed with `event`."""
        ctx = FakeJobContext(make_job(CALL_ID))
        worker._session_closed(cast(JobContext, ctx), self.job, event)
        assert self.job.hang_up is not None
        await asyncio.wait_for(self.job.hang_up, 10)
        assert ctx.deleted_rooms == [CALL_ID]  # the line drops
        (update,) = ctx.api.room.metadata_updates
        doc: dict[str, Any] = json.loads(update.metadata)
        return doc

    async def aclose(self) -> None:
        await self.session.aclose()
        await self.tts.aclose()


def spoken(cartesia_in: FakeCartesia) -> str:
    return " ".join(" ".join(c.transcript() for c in cartesia_in.sockets).split())


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_module, "PROVIDER_RETRY_INTERVAL_S", 0.2)


@pytest.mark.parametrize(
    ("how", "config", "named"),
    [
        ("500", ALICE, "APIStatusError 500"),
        ("401", ALICE, "APIStatusError 401"),
        ("cut", ALICE, "APIConnectionError"),
        ("500", CARLOS, "APIStatusError 500"),
    ],
)
@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_openai_failing_mid_call_is_met_with_the_apology(
    aiohttp_server: AiohttpServer, how: str, config: CallConfig, named: str
) -> None:
    """OpenAI failing for good after the greeting and a reply: the session closed at once,
    the line dropped, and the callee, who had just asked a question, heard nothing more.
    Now they hear the call's apology in its language (Cartesia alone says it), then the
    line drops: the call `failed` on the room with OpenAI named, `spoke` true."""
    openai_in = await openai_failing_after_replies(aiohttp_server, how)
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(config, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.talk()
        heard = call.line.samples
        event = await asyncio.wait_for(call.closed, 15)
    finally:
        await call.aclose()

    assert event.reason == CloseReason.ERROR and isinstance(event.error, LLMError)
    apology = apology_for(config.tts_language)
    assert spoken(cartesia_in).endswith(apology)
    assert spoken(cartesia_in).count(apology) == 1
    assert call.line.samples > heard  # the apology reached the line
    assert call.turns[-1].role == "agent" and call.turns[-1].text == apology
    # Only the greeting and the reply went to OpenAI before it failed: no LLM for the apology.
    asked = {"500": 3 + 2, "401": 3, "cut": 3}[how]  # a 500 is tried twice more
    assert len(openai_in.completions) == asked
    assert await call.outcome_on_the_room(event) == {
        "campaign": "SUMMER2024",
        "outcome": "failed",
        "reason": f"the agent's session failed: llm (openai) {named}",
        "spoke": True,
    }


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_reply_cut_by_openai_is_reported_as_interrupted(
    aiohttp_server: AiohttpServer,
) -> None:
    """OpenAI's stream cut after a reply's first words: the words the callee heard are the
    reply's turn, marked interrupted (it was reported as a whole, uninterrupted turn), and
    the words never received are not in it."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "cut")
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.talk()
        await asyncio.wait_for(call.closed, 15)
    finally:
        await call.aclose()

    said = [(t.role, t.text, t.interrupted) for t in call.turns]
    assert said == [
        ("agent", REPLIES[0], False),
        ("callee", "How do I hold the bat?", False),
        ("agent", REPLIES[1], False),
        ("callee", "And my stance?", False),
        ("agent", CUT_REPLY[:20].strip(), True),
        ("agent", apology_for("en"), False),
    ]


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_the_apology_is_said_once_and_nothing_after_it(
    aiohttp_server: AiohttpServer,
) -> None:
    """While the apology plays the callee speaks, and another LLM failure comes: no reply is
    asked of OpenAI, and the apology is not said again."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "401")
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, SlowLine())
    session = cast(Any, call.session)  # agent.session.CallSession
    try:
        await call.talk()
        await eventually(lambda: session.failure is not None, "the failure", 10)
        failure = session.failure
        assert isinstance(failure, LLMError)
        session._on_error(failure.model_copy(update={"timestamp": time.time()}))
        end_user_turn(session, "Hello? Are you still there?")
        event = await asyncio.wait_for(call.closed, 15)
    finally:
        await call.aclose()

    assert event.reason == CloseReason.ERROR and event.error is failure
    assert spoken(cartesia_in).count(apology_for("en")) == 1
    assert len(openai_in.completions) == 3
    # The callee's words over the apology (which is not to be interrupted) are not taken as
    # a turn by livekit-agents: nothing was asked of the LLM for them.
    assert call.turns[-1].text == apology_for("en")


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_a_callee_hanging_up_on_the_apology_still_fails_the_call(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The callee hangs up while the apology plays: the session closes without an error
    (the callee left), and the call is `failed` with OpenAI named all the same; no ERROR
    says the session closed already is closing (GW's finding)."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "500")
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, SlowLine())
    session = cast(Any, call.session)  # agent.session.CallSession
    try:
        await call.talk()
        await eventually(lambda: session.failure is not None, "the failure", 10)
        await session.aclose()
        event = await asyncio.wait_for(call.closed, 5)
    finally:
        await call.aclose()

    assert event.reason != CloseReason.ERROR
    await asyncio.sleep(0.1)  # the apology's close task, ended with the session
    closing_again = [r for r in caplog.records if "closing due to unrecoverable" in r.message]
    assert closing_again == []
    room = await call.outcome_on_the_room(event)
    assert room["reason"] == "the agent's session failed: llm (openai) APIStatusError 500"
    assert (room["outcome"], room["spoke"]) == ("failed", True)
    assert call.job.end.ended_by() == "system"


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_openai_failing_the_greeting_is_apologised_for_and_said_nothing(
    aiohttp_server: AiohttpServer,
) -> None:
    """OpenAI failing the greeting itself: the callee hears the apology, not silence, and
    the room still says the agent had said nothing (`spoke` false: the apology is not
    what the call was for; the server settles it `failed`)."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "500", [])
    cartesia_in = await fake_cartesia(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.session.start(call.agent)
        call.agent.greet()
        event = await asyncio.wait_for(call.closed, 15)
    finally:
        await call.aclose()

    assert spoken(cartesia_in) == apology_for("en")
    room = await call.outcome_on_the_room(event)
    assert (room["outcome"], room["spoke"]) == ("failed", False)


async def deepgram_lost_when(aiohttp_server: AiohttpServer, lost: asyncio.Event) -> Any:
    """Deepgram's live recognition: the first stream open until `lost` is set, then closed
    (1011, its internal error); every later connection refused (503)."""
    sockets: list[str] = []

    async def listen(request: web.Request) -> web.StreamResponse:
        sockets.append(request.path)
        if len(sockets) > 1:
            return web.json_response({"err_msg": "unavailable"}, status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        receiving = asyncio.ensure_future(ws.receive())
        await lost.wait()
        receiving.cancel()
        await ws.close(code=1011, message=b"internal error")
        return ws

    app = web.Application()
    app.router.add_get("/v1/listen", listen)
    server = await aiohttp_server(app)

    class StandIn:
        url = str(server.make_url("/v1/listen"))

    return StandIn()


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_deepgram_lost_mid_call_is_met_with_the_apology(
    aiohttp_server: AiohttpServer,
) -> None:
    """Deepgram's stream lost mid-call and not to be had again: the agent can no longer hear
    the callee, who heard nothing more before the line dropped. They hear the apology."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "500")
    cartesia_in = await fake_cartesia(aiohttp_server)
    lost = asyncio.Event()
    deepgram_in = await deepgram_lost_when(aiohttp_server, lost)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.session.start(call.agent)
        await asyncio.wait_for(call.agent.greet().wait_for_playout(), 10)
        lost.set()
        event = await asyncio.wait_for(call.closed, 20)
    finally:
        await call.aclose()

    assert event.reason == CloseReason.ERROR and event.error is not None
    assert event.error.type == "stt_error"
    assert spoken(cartesia_in).endswith(apology_for("en"))
    room = await call.outcome_on_the_room(event)
    assert room["reason"].startswith("the agent's session failed: stt (deepgram) ")
    assert (room["outcome"], room["spoke"]) == ("failed", True)


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_cartesia_failing_mid_call_ends_it_at_once(aiohttp_server: AiohttpServer) -> None:
    """Cartesia refusing mid-call (its credits spent): nothing can say an apology, so none
    is asked of it; the session closes at once on the TTS's failure."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "500")
    cartesia_in = await cartesia_refusing_after_greeting(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    sent: list[str] = []
    try:
        await call.session.start(call.agent)
        await asyncio.wait_for(call.agent.greet().wait_for_playout(), 10)

        def said(event: Any) -> None:
            sent.append(event.item.text_content or "")

        call.session.on("conversation_item_added", said)
        end_user_turn(call.session, "How do I hold the bat?")
        started = time.monotonic()
        event = await asyncio.wait_for(call.closed, 15)
        took = time.monotonic() - started
    finally:
        await call.aclose()

    assert event.reason == CloseReason.ERROR and event.error is not None
    assert event.error.type == "tts_error"
    assert took < 3
    assert apology_for("en") not in sent
    room = await call.outcome_on_the_room(event)
    assert room["reason"] == "the agent's session failed: tts (cartesia) APIStatusError 402"


@pytest.mark.usefixtures("loopback_only", "http", "quick_retries")
async def test_cartesia_failing_the_apology_ends_the_call_at_once(
    aiohttp_server: AiohttpServer,
) -> None:
    """OpenAI fails mid-call and Cartesia then refuses the apology: it is cut short, and the
    call ends at once on OpenAI's failure (the one that ended it), not after APOLOGY_TIMEOUT_S."""
    openai_in = await openai_failing_after_replies(aiohttp_server, "401", REPLIES[:1])
    cartesia_in = await cartesia_refusing_after_greeting(aiohttp_server)
    deepgram_in = await fake_deepgram(aiohttp_server, heard_in)
    call = Call(ALICE, openai_in, cartesia_in, deepgram_in, PhoneLine())
    try:
        await call.session.start(call.agent)
        await asyncio.wait_for(call.agent.greet().wait_for_playout(), 10)
        end_user_turn(call.session, "How do I hold the bat?")
        started = time.monotonic()
        event = await asyncio.wait_for(call.closed, 15)
        took = time.monotonic() - started
    finally:
        await call.aclose()

    assert took < 3
    assert event.reason == CloseReason.ERROR and isinstance(event.error, LLMError)
    room = await call.outcome_on_the_room(event)
    assert room["reason"] == "the agent's session failed: llm (openai) APIStatusError 401"


def test_every_language_has_its_apology() -> None:
    """Every language a call may be placed in has its apology, words the TTS says (no
    markup Cartesia would act on)."""
    assert set(APOLOGIES) == set(LANGUAGES)
    for language, text in APOLOGIES.items():
        assert has_spoken_word(text), language
        assert not set(text) & set("<>[]{}*_#"), language
        assert len(text) <= 160, language
    assert apology_for("xx") == APOLOGIES["en"]
