"""The job entrypoint and call control, driven with a stand-in JobContext (no LiveKit, no net)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import functools
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, cast

import aiohttp
import pytest
from aiohttp import web
from livekit import api, rtc
from livekit.agents import (
    AgentServer,
    AgentSession,
    APIStatusError,
    CloseEvent,
    CloseReason,
    JobContext,
)
from livekit.agents import cli as agents_cli
from livekit.agents.llm import ChatMessage
from livekit.agents.stt import STTError
from livekit.agents.tts.tts import TTSError
from livekit.plugins import cartesia
from livekit.protocol import agent as agent_proto
from livekit.protocol import models
from pytest_aiohttp import AiohttpServer

from agent import session as session_module
from agent import worker
from agent.caller import CallControl, OutboundCaller
from agent.plan import SessionPlan, plan_session
from agent.reporting import ReportSender
from agent.results import CallEnd, TranscriptRecorder
from agent.session import build_agent
from agent.spool import ReportSpool
from agent.worker import JobCallControl, build_server, entrypoint, export_for_job_processes
from common.config_store.model import AnalysisRequest, CallConfig, CallOptions, VoicemailPolicy
from common.contracts import REPORTS_PATH, AgentReport, RoomMetadata
from common.settings import Settings, load_settings
from common.update_config import ConfigStore
from tests.helpers import cartesia_refusing_the_key
from tests.unit.test_agent_answer import FAST_AMD, amd_says, end_user_turn, eventually
from tests.unit.test_agent_conversation import ScriptedLLM, tool_call
from tests.unit.test_agent_reporting import CALL, KEY, SECRET, ReportServer
from tests.unit.test_agent_session import NullAudio


class _Stop(BaseException):
    """Raised by the patched session builder: the test has seen what it needs (no Exception:
    the entrypoint hangs up on those)."""


class FakeRoomService:
    """livekit-api's RoomService: deleting a room fails with `failures` first, in turn."""

    def __init__(self) -> None:
        self.metadata_updates: list[api.UpdateRoomMetadataRequest] = []
        self.deleted: list[str] = []
        self.failures: list[Exception] = []
        self.on_delete: Callable[[], None] = lambda: None

    async def update_room_metadata(self, update: api.UpdateRoomMetadataRequest) -> models.Room:
        self.metadata_updates.append(update)
        return models.Room(name=update.room, metadata=update.metadata)

    async def delete_room(self, delete: api.DeleteRoomRequest) -> api.DeleteRoomResponse:
        self.on_delete()
        if self.failures:
            raise self.failures.pop(0)
        if delete.room in self.deleted:  # as LiveKit answers for a room already gone
            raise api.TwirpError("not_found", "room not found", status=404)
        self.deleted.append(delete.room)
        return api.DeleteRoomResponse()


class FakeApi:
    def __init__(self) -> None:
        self.room = FakeRoomService()


class FakeRtcRoom:
    metadata = '{"campaign": "SUMMER2024"}'

    def __init__(self) -> None:
        self.remote_participants: dict[str, FakeParticipant] = {}
        self.local_participant = FakeParticipant("agent-this-job", AGENT)


class FakeJobContext:
    """The parts of JobContext the entrypoint and JobCallControl use."""

    def __init__(self, job: agent_proto.Job, *, fake: bool = False) -> None:
        self.job = job
        self.log_context_fields: dict[str, Any] = {}
        self.shutdown_reasons: list[str] = []
        self.connected = False
        self.api = FakeApi()
        self.room = FakeRtcRoom()
        self.shutdown_callbacks: list[Callable[[str], Awaitable[None]]] = []
        self._fake = fake

    def add_shutdown_callback(self, callback: Callable[[str], Awaitable[None]]) -> None:
        self.shutdown_callbacks.append(callback)

    def is_fake_job(self) -> bool:
        return self._fake

    @property
    def deleted_rooms(self) -> list[str]:
        return self.api.room.deleted

    def shutdown(self, reason: str = "") -> None:
        self.shutdown_reasons.append(reason)

    async def connect(self) -> None:
        self.connected = True


def make_job(
    call_id: str,
    *,
    config: dict[str, Any] | None = None,
    created_ms: int | None = None,
    report_url: str | None = None,
) -> agent_proto.Job:
    metadata: dict[str, Any] = {"call_id": call_id, "phone_number": "+1234567890"}
    if config is not None:
        metadata["config"] = config
    if report_url is not None:
        metadata["report_url"] = report_url
    now_ms = int(time.time() * 1000) + 1 if created_ms is None else created_ms
    room = models.Room(name=call_id, creation_time=now_ms // 1000, creation_time_ms=now_ms)
    return agent_proto.Job(id=f"job-{call_id}", room=room, metadata=json.dumps(metadata))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the job process helpers at a temp config.json."""
    settings = Settings(
        config_path=tmp_path / "config.json", agent_report_spool_dir=tmp_path / "agent-reports"
    )
    store = ConfigStore(settings.config_path)
    monkeypatch.setattr(worker, "job_settings", lambda: settings)
    monkeypatch.setattr(worker, "job_config_store", lambda: store)
    return settings


@pytest.fixture
def built_plans(monkeypatch: pytest.MonkeyPatch) -> list[SessionPlan]:
    """Capture the plan each job builds its session from, then stop the job there."""
    plans: list[SessionPlan] = []

    def capture(plan: SessionPlan, *_args: Any, **_kwargs: Any) -> NoReturn:
        plans.append(plan)
        raise _Stop

    monkeypatch.setattr(worker, "build_session", capture)
    return plans


async def run_job(ctx: FakeJobContext) -> None:
    with pytest.raises(_Stop):
        await entrypoint(cast(JobContext, ctx))


async def test_each_job_gets_its_own_calls_config(
    settings: Settings, built_plans: list[SessionPlan], caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigStore(settings.config_path)
    await store.update_async("Alice Smith", "Coach cricket.", "en", "Excited", call_id="call-a")
    await store.update_async("Carlos García", "Vende.", "es", "Calm", call_id="call-b")
    caplog.set_level(logging.INFO, logger="agent.worker")

    ctx_a, ctx_b = FakeJobContext(make_job("call-a")), FakeJobContext(make_job("call-b"))
    await run_job(ctx_a)
    await run_job(ctx_b)

    assert [(p.call_id, p.caller_name, p.language) for p in built_plans] == [
        ("call-a", "Alice Smith", "en"),
        ("call-b", "Carlos García", "es"),
    ]
    assert all(p.source == "config.json" for p in built_plans)
    assert ctx_a.connected and ctx_a.deleted_rooms == []
    assert ctx_a.log_context_fields == {"call_id": "call-a"}
    assert "call call-a: using config from config.json" in caplog.text
    assert "+1234567890" not in caplog.text and "+1•••••7890" in caplog.text


async def test_record_written_after_the_room_uses_the_snapshot(
    settings: Settings, built_plans: list[SessionPlan], caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigStore(settings.config_path)
    created_ms = int(time.time() * 1000) - 5_000  # the room is older than the record
    snapshot = {"caller_name": "Alice Snapshot", "tts_language": "fr", "call_id": "call-a"}
    await store.update_async("Rewritten Later", call_id="call-a")
    caplog.set_level(logging.INFO, logger="agent.worker")

    await run_job(FakeJobContext(make_job("call-a", config=snapshot, created_ms=created_ms)))

    assert [(p.source, p.caller_name, p.language) for p in built_plans] == [
        ("dispatch-metadata", "Alice Snapshot", "fr")
    ]
    assert "using config from dispatch-metadata" in caplog.text


async def test_missing_record_uses_the_snapshot(
    settings: Settings, built_plans: list[SessionPlan]
) -> None:
    snapshot = {"caller_name": "Emma Watson", "tts_emotion": "Serious", "call_id": "call-e"}
    await run_job(FakeJobContext(make_job("call-e", config=snapshot)))
    assert built_plans[0].source == "dispatch-metadata"
    assert (built_plans[0].caller_name, built_plans[0].tts.emotion) == ("Emma Watson", "confident")
    assert not settings.config_path.exists()


async def test_no_config_at_all_refuses_and_hangs_up(
    settings: Settings, built_plans: list[SessionPlan], caplog: pytest.LogCaptureFixture
) -> None:
    # Another call's record and a flat "latest" document exist: neither may be used.
    await ConfigStore(settings.config_path).update_async("Bob Other", call_id="call-other")
    ctx = FakeJobContext(make_job("call-lost"))

    await entrypoint(cast(JobContext, ctx))

    assert built_plans == []
    assert not ctx.connected
    assert ctx.deleted_rooms == ["call-lost"]
    assert ctx.shutdown_reasons == ["no config for this call"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "call call-lost: refusing job" in errors[0].getMessage()


async def test_console_job_without_config_talks_with_defaults(
    settings: Settings, built_plans: list[SessionPlan]
) -> None:
    job = agent_proto.Job(id="mock-job", room=models.Room(name="console-room"))
    await run_job(FakeJobContext(job, fake=True))
    assert (built_plans[0].source, built_plans[0].caller_name) == ("console-defaults", "Guest")


async def test_call_control_sets_outcome_and_deletes_the_room() -> None:
    ctx = FakeJobContext(make_job("call-v"))
    control = JobCallControl(cast(JobContext, ctx), "call-v")

    await control.set_outcome("voicemail")
    await control.hang_up()

    (update,) = ctx.api.room.metadata_updates
    assert update.room == "call-v"
    assert json.loads(update.metadata) == {"campaign": "SUMMER2024", "outcome": "voicemail"}
    assert ctx.deleted_rooms == ["call-v"]
    assert ctx.shutdown_reasons == ["call ended by the agent"]


def test_room_metadata_with_outcome() -> None:
    assert json.loads(RoomMetadata.with_outcome("", "voicemail")) == {"outcome": "voicemail"}
    assert json.loads(RoomMetadata.with_outcome("not json", "voicemail")) == {
        "outcome": "voicemail"
    }
    assert json.loads(RoomMetadata.with_outcome('{"a": 1}', "voicemail")) == {
        "a": 1,
        "outcome": "voicemail",
    }


def test_job_processes_get_an_absolute_config_path(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    export_for_job_processes(Settings(config_path=Path("relative/config.json")), environ)
    assert Path(environ["CONFIG_PATH"]).is_absolute()
    assert environ["CONFIG_PATH"].endswith("relative/config.json")


def test_job_processes_keep_the_settings_the_worker_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job process loaded .env again: an edit meant for the next restart (here with a
    typo) crashed every new job before it could hang up, the callee answering to silence."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    (tmp_path / ".env").write_text("OPENAI_MODEL=gpt-at-start\n")
    environ: dict[str, str] = {}
    export_for_job_processes(load_settings(), environ)
    (tmp_path / ".env").write_text("OPENAI_MODEL=gpt-edited\nCALL_RINGING_TIMEOUT_S=3O\n")
    for name, value in environ.items():  # what a job process inherits
        monkeypatch.setenv(name, value)
    assert worker.job_settings.__wrapped__().openai_model == "gpt-at-start"


def test_server_registers_the_entrypoint_under_the_agent_name() -> None:
    server = build_server(Settings(agent_name="outbound-caller-test"))
    assert server._agent_name == "outbound-caller-test"
    assert server._entrypoint_fnc is entrypoint
    # The shutdown callback analyses the call and retries its reports: not killed at 10 s.
    assert server._shutdown_process_timeout == 300
    assert worker.ANALYSIS_TIMEOUT_S + worker.REPORT_FLUSH_TIMEOUT_S < 300
    # Its health/status HTTP server listened on every interface (livekit-agents' default).
    assert server._host == "127.0.0.1"
    assert build_server(Settings(agent_http_host="0.0.0.0"))._host == "0.0.0.0"  # noqa: S104


async def test_the_agents_hang_up_is_known_before_the_room_goes() -> None:
    ctx = FakeJobContext(make_job("call-h"))
    end = CallEnd()
    end.answered = True
    flag_when_deleted: list[bool] = []
    ctx.api.room.on_delete = lambda: flag_when_deleted.append(end.agent_hung_up)
    await JobCallControl(cast(JobContext, ctx), "call-h", end).hang_up()

    assert flag_when_deleted == [True]
    assert end.ended_by() == "agent"


async def reporting_to(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[ReportServer, str]:
    """A report receiver that verifies as the server does, and job settings that sign for it:
    the receiver and its URL."""
    reports = ReportServer()
    app = web.Application()
    app.router.add_post(REPORTS_PATH, reports.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    signing = dataclasses.replace(settings, livekit_api_key=KEY, livekit_api_secret=SECRET)
    monkeypatch.setattr(worker, "job_settings", lambda: signing)
    return reports, str(server.make_url(REPORTS_PATH))


async def test_a_refused_job_still_sends_its_final_report(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    await entrypoint(cast(JobContext, ctx))
    assert ctx.shutdown_reasons == ["no config for this call"]
    (update,) = ctx.api.room.metadata_updates
    reason = "the agent had no config for this call"
    assert RoomMetadata.parse(update.metadata) == RoomMetadata(
        outcome="failed", reason=reason, spoke=False
    )
    (on_shutdown,) = ctx.shutdown_callbacks
    await asyncio.wait_for(on_shutdown("no config for this call"), 10)

    (final,) = reports.reports
    assert (final.call_id, final.seq, final.kind) == (CALL, 0, "final")
    assert final.final is not None
    assert (final.final.transcript, final.final.ended_by) == ([], "system")


async def test_a_jobs_final_report_the_server_did_not_take_is_kept_in_the_spool(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calls server away when the job ends (a 503 until the job's flush ran out): the
    final report was dropped with an ERROR. Now it is kept in AGENT_REPORT_SPOOL_DIR, from
    which the worker sends it again (agent.spool, test_agent_reports_e2e)."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    reports.refuse = {0: 503}
    monkeypatch.setattr(worker, "REPORT_FLUSH_TIMEOUT_S", 0.5)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    await entrypoint(cast(JobContext, ctx))
    (on_shutdown,) = ctx.shutdown_callbacks
    await asyncio.wait_for(on_shutdown("no config for this call"), 10)

    assert reports.reports == []
    (kept,) = list(ReportSpool(settings.agent_report_spool_dir).load())
    assert (kept.url, kept.call_id) == (url, CALL)
    assert [(r.seq, r.kind) for r in kept.reports] == [(0, "final")]


async def test_the_worker_sends_its_spool_again_while_it_runs(
    tmp_path: Path, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a job left in the spool goes from the worker's own process, from its start."""
    reports, url = await reporting_to(
        Settings(config_path=tmp_path / "config.json"), aiohttp_server, monkeypatch
    )
    spool = ReportSpool(tmp_path / "agent-reports")
    body = AgentReport(call_id=CALL, seq=7, kind="answered", at=time.time()).to_json()
    assert spool.save(url, CALL, [body]) is not None

    async def registered(_self: AgentServer, **_kwargs: Any) -> None:
        await eventually(lambda: not list(spool.load()), "the spool sent")

    monkeypatch.setattr(AgentServer, "run", registered)
    signing = Settings(livekit_api_key=KEY, livekit_api_secret=SECRET)
    server = build_server(dataclasses.replace(signing, agent_report_spool_dir=spool.directory))
    await asyncio.wait_for(server.run(), 10)
    assert [(r.call_id, r.seq, r.kind) for r in reports.reports] == [(CALL, 7, "answered")]


def roomless(session: AgentSession[None], sessions: list[AgentSession[None]]) -> AgentSession[None]:
    """`session`, started with its agent alone (these jobs have no room), kept in `sessions`."""
    start = session.start

    async def start_without_room(agent: OutboundCaller, **_room: Any) -> None:
        await start(agent)

    session.start = start_without_room  # type: ignore[assignment,method-assign]
    sessions.append(session)
    return session


def built_without_room(monkeypatch: pytest.MonkeyPatch, sessions: list[AgentSession[None]]) -> None:
    """The job's session as `build_session` makes it (with what the test patched into
    agent.session), speaking to nobody, started without a room, kept in `sessions`."""
    real_build_session = session_module.build_session

    def build(
        plan: SessionPlan, settings: Settings, control: CallControl, **kwargs: Any
    ) -> tuple[AgentSession[None], OutboundCaller]:
        session, agent = real_build_session(plan, settings, control, **kwargs)
        session.output.audio = NullAudio()
        return roomless(session, sessions), agent

    monkeypatch.setattr(worker, "build_session", build)


class FakeParticipant:
    def __init__(
        self,
        identity: str,
        kind: int,
        status: str | None = None,
        joined_at: datetime.datetime | None = None,
    ) -> None:
        self.identity = identity
        self.kind = kind
        self.attributes: dict[str, str] = {} if status is None else {"sip.callStatus": status}
        self.joined_at = joined_at


class FakeRoom(rtc.EventEmitter[str]):
    """Just what wait_for_callee uses: remote participants and room events."""

    def __init__(self, *participants: FakeParticipant) -> None:
        super().__init__()
        self.remote_participants = {p.identity: p for p in participants}
        self.local_participant = FakeParticipant("agent-this-job", AGENT)
        self.metadata = ""


SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
AGENT = rtc.ParticipantKind.PARTICIPANT_KIND_AGENT


async def test_callee_is_greeted_only_once_the_call_is_active() -> None:
    phone = FakeParticipant("sip_+1234567890", SIP, "ringing")
    room = FakeRoom(FakeParticipant("observer", rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD))
    waiting = asyncio.create_task(worker.wait_for_callee(cast(rtc.Room, room), 5.0))

    await asyncio.sleep(0)
    room.remote_participants[phone.identity] = phone
    room.emit("participant_connected", phone)
    await asyncio.sleep(0)
    assert not waiting.done()  # ringing: nobody to greet yet

    phone.attributes["sip.callStatus"] = "active"
    room.emit("participant_attributes_changed", ["sip.callStatus"], phone)
    answered = await waiting
    assert answered is not None and answered.identity == phone.identity
    assert not room._events["participant_attributes_changed"]  # handlers removed


async def test_already_active_callee_is_returned_at_once() -> None:
    phone = FakeParticipant("sip_1", SIP, "active")
    answered = await worker.wait_for_callee(cast(rtc.Room, FakeRoom(phone)), 5.0)
    assert answered is not None and answered.identity == "sip_1"


async def test_callee_who_never_answers() -> None:
    phone = FakeParticipant("sip_1", SIP, "dialing")
    room = FakeRoom(phone)
    waiting = asyncio.create_task(worker.wait_for_callee(cast(rtc.Room, room), 5.0))
    await asyncio.sleep(0)
    room.emit("participant_disconnected", phone)
    assert await waiting is None

    assert await worker.wait_for_callee(cast(rtc.Room, FakeRoom(phone)), 0.01) is None


def said(session: AgentSession[None], text: str) -> bool:
    """Whether the agent's history holds `text` as something the agent said."""
    return any(
        message.role == "assistant" and message.text_content == text
        for message in session.history.messages()
    )


async def test_an_answered_call_from_start_to_final_report(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entrypoint's wiring, with a text-only session in place of the room: the answer,
    the verdict, every turn as it happens, the agent's hang-up, then the final report from
    the shutdown callback."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    options = CallOptions(first_message="Hi Alice, it's your coach.", analysis=AnalysisRequest())
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL, options=options)

    llm = ScriptedLLM(
        {
            **amd_says("human", "Hello?"),
            "Who is this?": ("Your cricket coach!", []),
            "Bye!": ("", tool_call("end_call")),
            "tool:end_call": ("Goodbye Alice!", []),
        },
        usage=(50, 5),
    )
    sessions: list[AgentSession[None]] = []

    def text_only_session(
        plan: SessionPlan, _settings: Settings, control: CallControl, **kwargs: Any
    ) -> tuple[AgentSession[None], OutboundCaller]:
        return roomless(AgentSession[None](llm=llm), sessions), build_agent(plan, control, **kwargs)

    async def answered(_room: object, _timeout_s: float) -> FakeParticipant:
        return FakeParticipant("sip-" + CALL, SIP, "active")

    monkeypatch.setattr(worker, "build_session", text_only_session)
    monkeypatch.setattr(worker, "wait_for_callee", answered)
    monkeypatch.setattr(worker, "AMD_OPTIONS", FAST_AMD)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    ctx.room = FakeRoom()  # type: ignore[assignment]

    async with llm:
        entry = asyncio.create_task(entrypoint(cast(JobContext, ctx)))
        await eventually(lambda: sessions and sessions[0].amd is not None, "the detector")
        session = sessions[0]
        end_user_turn(session, "Hello?")
        await asyncio.wait_for(entry, 10)  # greeted: the entrypoint is done
        await eventually(lambda: session.history.messages(), "the first message")
        end_user_turn(session, "Who is this?")
        await eventually(lambda: len(llm.contexts) == 1, "the reply")
        # The reply in the history (its turn reported) before the callee's next turn: the
        # LLM asked is not the reply said, and on a loaded machine "Bye!" came first (its
        # turn reported before the reply's, about 1 run in 3 under -n 2).
        await eventually(lambda: said(session, "Your cricket coach!"), "the reply said")
        end_user_turn(session, "Bye!")
        await eventually(lambda: ctx.shutdown_reasons, "the hang-up")
        await session.aclose()  # what the framework does before the shutdown callbacks
        for callback in ctx.shutdown_callbacks:
            await asyncio.wait_for(callback("call ended by the agent"), 10)

    assert ctx.shutdown_reasons == ["call ended by the agent", "session closed"]
    assert ctx.deleted_rooms == [CALL]
    kinds = [(r.kind, r.turn.role if r.turn else None) for r in reports.reports]
    assert kinds == [
        ("answered", None),
        ("turn", "callee"),  # "Hello?", held back from the LLM until the greeting
        ("amd", None),
        ("turn", "agent"),
        ("turn", "callee"),
        ("turn", "agent"),
        ("turn", "callee"),
        ("turn", "agent"),
        ("final", None),
    ]
    assert [r.seq for r in reports.reports] == list(range(9))
    amd = reports.reports[2].amd
    assert amd is not None and amd.category == "human"
    final = reports.reports[-1].final
    assert final is not None
    assert final.ended_by == "agent"
    assert [t.text for t in final.transcript] == [
        "Hello?",
        "Hi Alice, it's your coach.",
        "Who is this?",
        "Your cricket coach!",
        "Bye!",
        "Goodbye Alice!",
    ]
    assert final.usage["llm"][0]["model"] == "scripted-model"
    # The scripted LLM cannot do structured output; with the real plugin see test_agent_analysis.
    assert final.analysis_errors == ["analysis failed: no LLM for this call"]


# ----------------------------------------------------------------------------- failures


async def test_an_agent_that_fails_after_joining_hangs_up(
    settings: Settings,
    aiohttp_server: AiohttpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server dialled the callee into the room: an error after the agent joined (here a
    provider's missing key, raised while the session is built) deletes the room rather than
    leave the callee with silence, and the final report says the system ended the call."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL)

    def no_key(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise ValueError("Cartesia API key is required")

    monkeypatch.setattr(worker, "build_session", no_key)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    await entrypoint(cast(JobContext, ctx))

    assert ctx.connected and ctx.deleted_rooms == [CALL]
    (update,) = ctx.api.room.metadata_updates
    reason = "the agent failed: ValueError"
    assert RoomMetadata.parse(update.metadata) == RoomMetadata(
        outcome="failed", reason=reason, spoke=False
    )
    assert ctx.shutdown_reasons == ["the agent failed"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [f"call {CALL}: the agent failed; hanging up"]
    assert errors[0].exc_info is not None
    (on_shutdown,) = ctx.shutdown_callbacks
    await asyncio.wait_for(on_shutdown("the agent failed"), 10)
    (final,) = reports.reports
    assert final.final is not None and final.final.ended_by == "system"


async def test_a_failed_room_deletion_is_tried_again_and_then_an_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(worker, "END_ROOM_RETRY_S", (0.0, 0.0))
    ctx = FakeJobContext(make_job("call-d"))
    internal = api.TwirpError("internal", "try later", status=500)
    ctx.api.room.failures = [internal, aiohttp.ClientConnectionError("reset")]
    assert await worker.end_room(cast(JobContext, ctx), "call-d")
    assert ctx.deleted_rooms == ["call-d"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "internal: try later" in warnings[0]

    ctx.api.room.failures = [internal] * 3
    assert not await worker.end_room(cast(JobContext, ctx), "call-d")
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert error.startswith("call call-d: could not end the call (its room was not deleted")
    assert "after 3 attempts" in error

    ctx.api.room.failures = [api.TwirpError("not_found", "no room", status=404)]
    assert await worker.end_room(cast(JobContext, ctx), "call-d")  # already gone: ended


async def test_a_session_closed_by_an_error_is_no_hang_up_by_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The session closes on a provider's error, and deletes the room with it: the callee
    then leaves with ROOM_DELETED, which alone would read as the server's hang-up."""
    ctx = FakeJobContext(make_job("call-e"))
    job = worker._Job(
        "call-e", ReportSender(None, "call-e", KEY, SECRET), TranscriptRecorder(print)
    )
    job.end.answered = True
    failure = APIStatusError("bad key", status_code=401)
    error = TTSError(timestamp=0.0, label="tts", error=failure, recoverable=False)
    closed = CloseEvent(reason=CloseReason.ERROR, error=error)
    worker._session_closed(cast(JobContext, ctx), job, closed)
    job.end.on_room_disconnected(rtc.DisconnectReason.ROOM_DELETED)
    assert job.end.ended_by() == "system"
    assert ctx.shutdown_reasons == ["session closed"]
    assert "the session closed on an error (tts APIStatusError 401)" in caplog.text


async def test_a_session_closed_by_an_error_hangs_up_even_if_deleting_fails_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Closed on a provider's error, the session's own room deletion (RoomIO's, on close) is
    one attempt, a failure only a WARNING: the callee stayed on the line in silence. The
    worker hangs up as for any failure of the agent: tried again, before the final report."""
    monkeypatch.setattr(worker, "END_ROOM_RETRY_S", (0.0, 0.0))
    ctx = FakeJobContext(make_job("call-g"))
    ctx.api.room.failures = [api.TwirpError("unavailable", "try later", status=503)]
    recorded_first: list[bool] = []
    ctx.api.room.on_delete = lambda: recorded_first.append(bool(ctx.api.room.metadata_updates))
    job = worker._Job(
        "call-g", ReportSender(None, "call-g", KEY, SECRET), TranscriptRecorder(print)
    )
    ctx.add_shutdown_callback(lambda _reason: worker._finish(job))
    failure = APIStatusError("bad key", status_code=401)
    error = TTSError(timestamp=0.0, label="tts", error=failure, recoverable=False)
    worker._session_closed(
        cast(JobContext, ctx), job, CloseEvent(reason=CloseReason.ERROR, error=error)
    )
    for callback in ctx.shutdown_callbacks:
        await asyncio.wait_for(callback("session closed"), 10)
    assert ctx.deleted_rooms == ["call-g"]
    assert recorded_first == [True, True]  # the failure is on the room before it goes
    assert "deleting its room failed (unavailable: try later); trying again" in caplog.text


async def test_an_agent_failing_after_it_found_voicemail_keeps_the_voicemail_outcome() -> None:
    """A machine answered and the agent said so (its tool, or the detector's verdict: the
    room's outcome `voicemail`), then a provider's error closed the session while it left
    its message: the failure wrote `failed` over it, and the call ended failed (or completed)
    though the voicemail was reached. The outcome stays; the failure is its reason."""
    ctx = FakeJobContext(make_job("call-m"))
    job = worker._Job(
        "call-m", ReportSender(None, "call-m", KEY, SECRET), TranscriptRecorder(print)
    )
    job.end.answered = True
    control = JobCallControl(cast(JobContext, ctx), "call-m", job.end, job.sender)
    await control.set_outcome("voicemail")
    failure = APIStatusError("overloaded", status_code=529)
    error = TTSError(timestamp=0.0, label="tts", error=failure, recoverable=False)
    worker._session_closed(
        cast(JobContext, ctx), job, CloseEvent(reason=CloseReason.ERROR, error=error)
    )
    assert job.hang_up is not None
    await asyncio.wait_for(job.hang_up, 10)
    assert ctx.deleted_rooms == ["call-m"]
    last = RoomMetadata.parse(ctx.api.room.metadata_updates[-1].metadata)
    reason = "the agent's session failed: tts APIStatusError 529"
    assert last == RoomMetadata(outcome="voicemail", reason=reason)
    assert job.end.ended_by() == "system"


async def test_a_greeting_the_tts_cannot_speak_ends_the_call_with_a_report(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session as `build_session` makes it, with the real Cartesia plugin refused by a
    local stand-in (401): the callee answers, the first message cannot be spoken, and the
    call ends at once (room deleted, final report `ended_by: system`) rather than leave the
    callee in silence."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    options = CallOptions(first_message="Hi Alice, it's your coach.")
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL, options=options)

    cartesia_server = await cartesia_refusing_the_key(aiohttp_server)
    http = aiohttp.ClientSession()
    llm = ScriptedLLM(amd_says("human", "Hello?"))
    sessions: list[AgentSession[None]] = []

    def refused_tts(_plan: SessionPlan, _settings: Settings) -> cartesia.TTS:
        base = str(cartesia_server.make_url("")).rstrip("/")
        return cartesia.TTS(api_key="bad-key", base_url=base, http_session=http)

    async def answered(_room: object, _timeout_s: float) -> FakeParticipant:
        return FakeParticipant("sip-" + CALL, SIP, "active")

    monkeypatch.setattr(session_module, "build_stt", lambda *_args: None)
    monkeypatch.setattr(session_module, "build_llm", lambda *_args: llm)
    monkeypatch.setattr(session_module, "build_tts", refused_tts)
    built_without_room(monkeypatch, sessions)
    monkeypatch.setattr(worker, "wait_for_callee", answered)
    monkeypatch.setattr(worker, "AMD_OPTIONS", FAST_AMD)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    ctx.room = FakeRoom()  # type: ignore[assignment]

    try:
        async with llm:
            entry = asyncio.create_task(entrypoint(cast(JobContext, ctx)))
            await eventually(lambda: sessions and sessions[0].amd is not None, "the detector")
            end_user_turn(sessions[0], "Hello?")
            await asyncio.wait_for(entry, 10)
            await eventually(lambda: "session closed" in ctx.shutdown_reasons, "the end", 10)
            await sessions[0].aclose()
            for callback in ctx.shutdown_callbacks:
                await asyncio.wait_for(callback("session closed"), 10)
    finally:
        await http.close()

    assert ctx.deleted_rooms == [CALL]
    (update,) = ctx.api.room.metadata_updates
    assert RoomMetadata.parse(update.metadata) == RoomMetadata(
        outcome="failed",
        reason="the agent's session failed: tts (cartesia) APIStatusError 401",
        spoke=False,
    )
    final = reports.reports[-1].final
    assert final is not None and final.ended_by == "system"


async def test_an_agent_failing_while_the_phone_rings_is_not_logged_as_no_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The session closed on a provider's error while the phone rang: the failure ends the
    call (recorded on the room, then the room deleted); the job says so, not that the callee
    did not answer."""
    caplog.set_level(logging.INFO)
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL)
    sessions: list[AgentSession[None]] = []

    def roomless_session(
        plan: SessionPlan, _settings: Settings, control: CallControl, **kwargs: Any
    ) -> tuple[AgentSession[None], OutboundCaller]:
        session = AgentSession[None]()

        async def start_without_room(agent: OutboundCaller, **_room: Any) -> None:
            pass

        session.start = start_without_room  # type: ignore[assignment,method-assign]
        sessions.append(session)
        return session, build_agent(plan, control, **kwargs)

    async def provider_fails_while_ringing(_room: object, _timeout_s: float) -> None:
        failure = APIStatusError("bad key", status_code=401)
        error = STTError(timestamp=0.0, label="stt", error=failure, recoverable=False)
        sessions[0].emit("close", CloseEvent(reason=CloseReason.ERROR, error=error))
        await asyncio.sleep(0)
        return None  # what wait_for_callee says once the room is gone

    monkeypatch.setattr(worker, "build_session", roomless_session)
    monkeypatch.setattr(worker, "wait_for_callee", provider_fails_while_ringing)
    ctx = FakeJobContext(make_job(CALL))
    ctx.room = FakeRoom()  # type: ignore[assignment]
    await entrypoint(cast(JobContext, ctx))
    for callback in ctx.shutdown_callbacks:
        await asyncio.wait_for(callback("session closed"), 10)

    assert ctx.deleted_rooms == [CALL]
    (update,) = ctx.api.room.metadata_updates
    assert RoomMetadata.parse(update.metadata).outcome == "failed"
    assert "not answered" not in caplog.text
    assert "the session closed on an error (stt APIStatusError 401)" in caplog.text


async def test_a_session_closed_by_the_callee_deletes_the_room_once_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The callee hung up: deleting the room is cleanup (nobody is left on the line), one
    attempt as RoomOptions.delete_room_on_close made, no outcome recorded, and a failure is
    no ERROR saying the callee may stay on the line."""
    ctx = FakeJobContext(make_job("call-h"))
    ctx.api.room.failures = [api.TwirpError("unavailable", "try later", status=503)]
    job = worker._Job(
        "call-h", ReportSender(None, "call-h", KEY, SECRET), TranscriptRecorder(print)
    )
    closed = CloseEvent(reason=CloseReason.PARTICIPANT_DISCONNECTED)
    worker._session_closed(cast(JobContext, ctx), job, closed)
    assert job.hang_up is not None
    await asyncio.wait_for(job.hang_up, 10)
    assert ctx.api.room.failures == [] and ctx.deleted_rooms == []
    assert ctx.api.room.metadata_updates == []
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert ctx.shutdown_reasons == ["session closed"]


async def test_a_livekit_that_does_not_answer_holds_no_hang_up_for_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The job's API client has no timeout but aiohttp's five minutes: each request to end
    the call is bounded, so a LiveKit that does not answer is tried again in time (and the
    final report, which waits for the hang-up, is not held for minutes)."""
    monkeypatch.setattr(worker, "END_ROOM_RETRY_S", (0.0, 0.0))
    monkeypatch.setattr(worker, "LIVEKIT_REQUEST_TIMEOUT_S", 0.05)
    ctx = FakeJobContext(make_job("call-i"))
    service = ctx.api.room
    answering = service.delete_room
    calls: list[int] = []

    async def silent_once(delete: api.DeleteRoomRequest) -> api.DeleteRoomResponse:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(3600)  # no answer
        return await answering(delete)

    async def silent_metadata(update: api.UpdateRoomMetadataRequest) -> models.Room:
        await asyncio.sleep(3600)
        return models.Room()

    service.delete_room = silent_once  # type: ignore[method-assign]
    service.update_room_metadata = silent_metadata  # type: ignore[method-assign]
    assert await asyncio.wait_for(worker.fail_call(cast(JobContext, ctx), "call-i", "x"), 5)
    assert service.deleted == ["call-i"] and len(calls) == 2


def test_the_agent_logs_a_calls_instructions_only_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README: no full instructions at INFO. The agent logged the first 80 characters of each
    call's instructions at INFO: a short one, whole ("remind Ms Lee of the 300 dollars she
    owes"), on the agent's host, and the callee's name on every call (the server logs
    neither). INFO now says how long the instructions are; DEBUG has them and the name."""
    from agent.config_source import SelectedConfig
    from agent.plan import plan_session
    from common.config_store.model import CallConfig

    said = "Remind Ms Lee of the 300 dollars she owes."
    config = CallConfig.create("Ms Lee", said)
    plan = plan_session(config, Settings(), call_id="call-ab12cd34ef56")
    selected = SelectedConfig("config.json", config, "its record")
    caplog.set_level(logging.DEBUG, logger="agent.worker")
    worker._log_selected("call-ab12cd34ef56", selected, plan)
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert info and not any("300 dollars" in line or "Ms Lee" in line for line in info), info
    assert any(f"instructions={len(plan.instructions)} chars" in line for line in info)
    assert any("300 dollars" in line and "caller=Ms Lee" in line for line in debug)


def _worker_exiting(monkeypatch: pytest.MonkeyPatch, fails: bool, code: object = 0) -> None:
    """livekit-agents' CLI as it runs a worker: a failed run is logged ('worker failed'),
    and the CLI exits with `code` (0 then too)."""

    async def run(self: AgentServer, *, devmode: bool = False, unregistered: bool = False) -> None:
        if fails:
            raise RuntimeError("failed to connect to livekit after 16 attempts")

    def run_app(server: AgentServer) -> NoReturn:
        with contextlib.suppress(RuntimeError):
            asyncio.run(server.run())
        raise SystemExit(code)

    monkeypatch.setattr(AgentServer, "run", run)
    monkeypatch.setattr(agents_cli, "run_app", run_app)
    monkeypatch.setattr(worker, "export_for_job_processes", lambda *_: None)


def test_a_worker_that_cannot_reach_livekit_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """LiveKit unreachable or refusing the key for the CLI's 16 attempts: livekit-agents logged
    'worker failed' and exited 0, and a supervisor restarting failed workers left it down."""
    _worker_exiting(monkeypatch, fails=True)
    assert worker.run_worker(Settings()) == 1
    assert capsys.readouterr().err == (
        "agent: the worker stopped: RuntimeError: failed to connect to livekit after 16"
        " attempts (check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET)\n"
    )


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (None, 0), (2, 2)])
def test_a_worker_that_stops_without_failing_exits_with_the_clis_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], code: object, expected: int
) -> None:
    _worker_exiting(monkeypatch, fails=False, code=code)
    assert worker.run_worker(Settings()) == expected
    assert capsys.readouterr().err == ""


def _plan_with_analysis(voicemail: VoicemailPolicy) -> SessionPlan:
    options = CallOptions(voicemail=voicemail, analysis=AnalysisRequest(summary=True))
    config = CallConfig.create("Alice", call_id=CALL, options=options)
    return plan_session(config, Settings(), call_id=CALL)


@pytest.mark.parametrize(
    ("voicemail", "agent_said", "analysed"),
    [
        (VoicemailPolicy(), [], False),
        (VoicemailPolicy(action="leave_message", message="Call us back."), ["Call us back."], True),
    ],
)
async def test_a_voicemail_hung_up_on_is_not_analysed(
    voicemail: VoicemailPolicy,
    agent_said: list[str],
    analysed: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """README: a summary of every call with a conversation, none for a voicemail hung up on.
    The machine's greeting is the transcript's one turn: the LLM was asked to summarise it,
    judge its success and extract the call's fields from it."""
    sender = ReportSender(None, CALL, KEY, SECRET)
    job = worker._Job(CALL, sender, TranscriptRecorder(sender.turn))
    job.plan = _plan_with_analysis(voicemail)
    job.end.answered = True
    job.end.outcome = "voicemail"
    job.recorder.start(time.time())
    greeting = "Hi, you've reached Alice. Leave a message after the tone."
    job.recorder.add_message(ChatMessage(role="user", content=[greeting]))
    for text in agent_said:
        job.recorder.add_message(ChatMessage(role="assistant", content=[text]))
    finals: list[Any] = []
    monkeypatch.setattr(sender, "final", finals.append)

    await worker._finish(job)

    (report,) = finals
    assert report.transcript[0].text == greeting
    # A conversation is analysed (here with no LLM, so the analysis fails): a greeting is not.
    expected = "analysis failed: no LLM for this call" if analysed else "no conversation to analyse"
    assert report.analysis_errors == [expected]


async def test_a_job_starting_while_config_json_is_no_json_object_uses_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_plans: list[SessionPlan]
) -> None:
    """Each job process loads its settings from the environment the worker exported, and
    that load refused a CONFIG_PATH whose file is no JSON object (a start-up check): a
    config.json broken so between the call's write and its job (NUL bytes left by a crash, a
    file copied over it) raised in the job before it could hang up, and the callee who
    answered heard silence. The worker checked the path at its start; a job uses the
    dispatch snapshot, as for any unreadable config.json."""
    environ: dict[str, str] = {}
    export_for_job_processes(Settings(config_path=tmp_path / "config.json"), environ)
    for name, value in environ.items():  # what a job process inherits
        monkeypatch.setenv(name, value)
    (tmp_path / "config.json").write_bytes(b"\x00" * 64)
    monkeypatch.setattr(worker, "job_settings", functools.cache(worker.job_settings.__wrapped__))
    monkeypatch.setattr(
        worker, "job_config_store", functools.cache(worker.job_config_store.__wrapped__)
    )
    snapshot = {"caller_name": "Emma Watson", "call_id": "call-e"}

    await run_job(FakeJobContext(make_job("call-e", config=snapshot)))

    assert [(p.source, p.caller_name) for p in built_plans] == [
        ("dispatch-metadata", "Emma Watson")
    ]


# ----------------------------------------------------------------------------- a second job


def at(seconds_ago: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)


async def test_a_second_job_for_a_call_leaves_it_to_the_first(
    settings: Settings, aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiveKit dispatched the call twice (a CreateDispatch retried, a job reassigned): both
    jobs joined, greeted the callee and talked over each other, and both reported under the
    same sequence numbers (the call's transcript a mix of the two; a failure of either hung
    up on the other). The later one now leaves at once: no session, no hang-up, no report."""
    reports, url = await reporting_to(settings, aiohttp_server, monkeypatch)
    await ConfigStore(settings.config_path).update_async("Alice", call_id=CALL)

    def no_session(*_args: Any, **_kwargs: Any) -> NoReturn:
        raise AssertionError("the second job built a session")

    monkeypatch.setattr(worker, "build_session", no_session)
    ctx = FakeJobContext(make_job(CALL, report_url=url))
    ctx.room.local_participant.joined_at = at(0)
    first = FakeParticipant("agent-first-job", AGENT, joined_at=at(1.5))
    ctx.room.remote_participants[first.identity] = first
    await entrypoint(cast(JobContext, ctx))

    assert ctx.connected and ctx.shutdown_reasons == ["another agent has this call"]
    assert ctx.deleted_rooms == [] and ctx.api.room.metadata_updates == []
    (on_shutdown,) = ctx.shutdown_callbacks
    await asyncio.wait_for(on_shutdown("another agent has this call"), 10)
    assert reports.posts == []


@pytest.mark.parametrize(
    ("mine", "theirs", "identity", "leaves"),
    [
        (at(0), at(1), "agent-b", True),  # they joined first
        (at(1), at(0), "agent-b", False),  # a second job came after: it leaves, not this one
        (None, None, "agent-a", True),  # no times: both name the smaller identity the first
        (None, None, "agent-z", False),
    ],
)
def test_which_of_two_agents_keeps_the_call(
    mine: datetime.datetime | None,
    theirs: datetime.datetime | None,
    identity: str,
    leaves: bool,
) -> None:
    room = FakeRoom(
        FakeParticipant("sip_1", SIP, "active", joined_at=at(3)),
        FakeParticipant(identity, AGENT, joined_at=theirs),
    )
    room.local_participant = FakeParticipant("agent-m", AGENT, joined_at=mine)
    other = worker.earlier_agent(cast(rtc.Room, room))
    assert (other is not None) is leaves


def test_an_agent_of_another_name_is_not_a_second_job() -> None:
    """An agent the project dispatches to every room (a recorder, a transcriber) joined
    first: the call's own agent stays."""
    theirs = FakeParticipant("agent-recorder", AGENT, joined_at=at(1))
    theirs.attributes["lk.agent.name"] = "recorder"
    room = FakeRoom(theirs)
    room.local_participant = FakeParticipant("agent-m", AGENT, joined_at=at(0))
    room.local_participant.attributes["lk.agent.name"] = "outbound-caller"
    assert worker.earlier_agent(cast(rtc.Room, room)) is None
    theirs.attributes["lk.agent.name"] = "outbound-caller"
    assert worker.earlier_agent(cast(rtc.Room, room)) is cast(rtc.RemoteParticipant, theirs)


def test_an_agent_that_gives_no_name_is_not_a_second_job() -> None:
    """An agent without livekit-agents' lk.agent.name (another program's: livekit-agents
    names every job) joined first: this job took it for a second dispatch of its own call and
    left, and the callee, who answered, heard nobody (the server counts a nameless agent as
    the call's, so it never ended the call either). The call's own agent stays."""
    theirs = FakeParticipant("agent-recorder", AGENT, joined_at=at(1))
    room = FakeRoom(theirs)
    room.local_participant = FakeParticipant("agent-m", AGENT, joined_at=at(0))
    room.local_participant.attributes["lk.agent.name"] = "outbound-caller"
    assert worker.earlier_agent(cast(rtc.Room, room)) is None


@contextlib.contextmanager
def logged_as_json(logger: logging.Logger, level: int | None = None) -> Iterator[io.StringIO]:
    """What `logger` writes meanwhile, as livekit-agents' JSON formatter writes it (at
    `level`, if given, for the while)."""
    from livekit.agents.cli.log import JsonFormatter

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    before = logger.level
    if level is not None:
        logger.setLevel(level)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def test_what_the_callee_said_stays_out_of_the_agents_log_above_debug() -> None:
    """livekit-agents logs the callee's first words at INFO on every answered call (`amd
    prediction`), in an `lk.pii.transcript` field its formatters print; the agent's log at
    its default level kept them (a voicemail greeting's name and number) for good."""
    from livekit.agents.log import logger as livekit_logger

    assert worker.CalleeWordsOutOfLogs in {type(f) for f in livekit_logger.filters}
    with logged_as_json(livekit_logger, logging.DEBUG) as out:
        said = {"lk.pii.transcript": "Hi, you reached Zelda Quux at 415 555 0199"}
        livekit_logger.info("amd prediction", extra={"category": "machine-vm", **said})
        livekit_logger.warning("skipping user input", extra={"lk.pii.user_input": "Zelda"})
        info, warning = (json.loads(line) for line in out.getvalue().splitlines())
        assert info["message"] == "amd prediction" and info["category"] == "machine-vm"
        assert "Zelda" not in out.getvalue()
        livekit_logger.debug("received user transcript", extra=said)  # DEBUG: README says so
        assert "Zelda Quux" in out.getvalue().splitlines()[-1]


def test_what_the_callee_said_stays_out_of_the_plugins_log_above_debug() -> None:
    """livekit-agents' plugins log lk.pii.* fields too, on loggers of their own, which the
    filter on livekit.agents' logger does not reach: Deepgram's STT logs a message it does
    not know, whole (the callee's words in a transcript), at WARNING."""
    from livekit.plugins.deepgram.log import logger as deepgram_logger

    with logged_as_json(deepgram_logger) as out:
        said = {"lk.pii.data": {"transcript": "Hi, you reached Zelda Quux at 415 555 0199"}}
        deepgram_logger.warning("received unexpected message from deepgram", extra=said)
        (warning,) = (json.loads(line) for line in out.getvalue().splitlines())
        assert warning["message"] == "received unexpected message from deepgram"
        assert "Zelda" not in out.getvalue()


def test_a_malformed_log_call_of_livekit_agents_does_not_raise_into_it() -> None:
    """The filter hiding what the agent could not say formats every record above DEBUG
    itself: a livekit-agents log call whose arguments do not fit its message raised
    TypeError into livekit-agents' own code (a TTS retry, the session's task) instead of the
    logging module's "--- Logging error ---" report; the record now passes as it came."""
    from livekit.agents.log import logger as livekit_logger

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    livekit_logger.addHandler(handler)
    propagate, livekit_logger.propagate = livekit_logger.propagate, False  # pytest's raise
    try:
        livekit_logger.warning("failed to synthesize speech: %s, retrying in %ss", "timeout")
    finally:
        livekit_logger.removeHandler(handler)
        livekit_logger.propagate = propagate
    assert len(records) == 1 and records[0].args == ("timeout",)


async def test_a_job_whose_config_json_is_half_written_says_so_not_using_defaults(
    settings: Settings, built_plans: list[SessionPlan], caplog: pytest.LogCaptureFixture
) -> None:
    """A config.json cut short (a crash mid-copy, a disk full under an editor) while a job
    read it: the job used its dispatch snapshot, as it should, but its log said the store was
    "using defaults" (at ERROR: the call spoke as "Guest"?) and that it chose the snapshot
    for "no config.json record": nothing said the file could not be read."""
    store = ConfigStore(settings.config_path)
    snapshot = await store.update_async("Emma Watson", "Vende.", "es", call_id="call-e")
    data = settings.config_path.read_bytes()
    settings.config_path.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.INFO)

    await run_job(FakeJobContext(make_job("call-e", config=snapshot)))

    assert [(p.source, p.caller_name) for p in built_plans] == [
        ("dispatch-metadata", "Emma Watson")
    ]
    assert "using defaults" not in caplog.text
    assert "the record of call-e is not read" in caplog.text
    assert (
        "call call-e: using config from dispatch-metadata (config.json record cannot be read:"
        " config.json is not valid JSON (" in caplog.text
    )
