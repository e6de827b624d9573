"""The transcript, who ended the call, usage and the final report.

The transcript comes from a real `AgentSession` driven text-only by the scripted LLM of
test_agent_conversation; one test sends it all the way to a report server on 127.0.0.1
(that one cannot use `no_network`; the others do).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.llm import ChatMessage, ChatRole
from livekit.agents.metrics import (
    AgentSessionUsage,
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)
from pytest_aiohttp import AiohttpServer

from agent.plan import SessionPlan, plan_session
from agent.reporting import ReportSender
from agent.results import (
    CallEnd,
    TranscriptRecorder,
    build_call_report,
    decide_ended_by,
    finish_call,
    usage_to_json,
)
from agent.session import build_agent
from common.config_store.model import AnalysisRequest, CallConfig, CallOptions
from common.contracts import (
    MAX_REPORT_BYTES,
    REPORTS_PATH,
    AgentReport,
    TranscriptTurn,
)
from common.settings import Settings
from tests.unit.test_agent_conversation import FakeCallControl, ScriptedLLM
from tests.unit.test_agent_reporting import CALL, FAST, KEY, SECRET, ReportServer

FIRST_MESSAGE = "Hi Alice, it's your cricket coach. Have you got a minute?"


def coach_plan(analysis: AnalysisRequest | None = None) -> SessionPlan:
    options = CallOptions(first_message=FIRST_MESSAGE, analysis=analysis)
    config = CallConfig.create("Alice Smith", "You are a cricket coach.", options=options)
    return plan_session(config, Settings(), call_id=CALL, source="config.json")


async def talk(
    recorder: TranscriptRecorder, llm: ScriptedLLM, plan: SessionPlan
) -> AgentSessionUsage:
    """Answer, greet with the first message, one exchange; returns the session's usage."""
    async with llm, AgentSession[None](llm=llm) as session:
        session.on("conversation_item_added", recorder.on_item_added)
        agent = build_agent(plan, FakeCallControl(), on_held_turn=recorder.add_message)
        await session.start(agent)
        recorder.start(time.time())
        await agent.greet()
        await session.run(user_input="Oh hi! Who is this?")
        return session.usage


@pytest.mark.usefixtures("no_network")
async def test_turns_are_captured_with_roles_text_and_order() -> None:
    reported: list[TranscriptTurn] = []
    recorder = TranscriptRecorder(reported.append)
    llm = ScriptedLLM({"Oh hi! Who is this?": ("Your coach, Alice!", [])}, usage=(120, 9))

    usage = await talk(recorder, llm, coach_plan())

    turns = recorder.turns
    assert [(t.role, t.text) for t in turns] == [
        ("agent", FIRST_MESSAGE),
        ("callee", "Oh hi! Who is this?"),
        ("agent", "Your coach, Alice!"),
    ]
    assert reported == turns  # each turn handed on as it happened
    assert all(0 <= t.at_s < 5 for t in turns)
    assert [t.at_s for t in turns] == sorted(t.at_s for t in turns)
    assert not any(t.interrupted for t in turns)
    # The fixed first message went straight to speech: the LLM was asked once, for the reply.
    assert len(llm.contexts) == 1
    assert usage_to_json(usage) == {
        "llm": [
            {
                "provider": "scripted",
                "model": "scripted-model",
                "input_tokens": 120,
                "output_tokens": 9,
            }
        ]
    }


@pytest.mark.usefixtures("no_network")
async def test_the_final_report_is_assembled() -> None:
    recorder = TranscriptRecorder(lambda _turn: None)
    llm = ScriptedLLM({"Oh hi! Who is this?": ("Your coach, Alice!", [])}, usage=(120, 9))
    plan = coach_plan(AnalysisRequest(summary=True))
    usage = await talk(recorder, llm, plan)
    end = CallEnd()
    end.answered = True
    end.sip_disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED

    report = await finish_call(
        ReportSender(None, CALL, KEY, SECRET),
        recorder.turns,
        ended_by=end.ended_by(),
        session_usage=usage,
        analysis_request=plan.analysis,
        llm=None,  # the scripted LLM has no structured output: covered in test_agent_analysis
        instructions=plan.instructions,
        analysis_timeout_s=1,
        flush_timeout_s=1,
    )

    assert report.ended_by == "callee"
    assert report.transcript == recorder.turns and len(report.transcript) == 3
    assert report.summary is None
    assert report.analysis_errors == ["analysis failed: no LLM for this call"]
    assert report.usage["llm"][0]["input_tokens"] == 120


@pytest.mark.usefixtures("no_network")
async def test_an_unanswered_call_has_an_empty_transcript_and_no_analysis() -> None:
    report = await finish_call(
        ReportSender(None, CALL, KEY, SECRET),
        [],
        ended_by=CallEnd().ended_by(),
        session_usage=None,
        analysis_request=AnalysisRequest(),
        llm=None,
        instructions="",
        analysis_timeout_s=1,
        flush_timeout_s=1,
    )
    assert (report.transcript, report.ended_by, report.usage) == ([], "system", {})
    assert report.analysis_errors == ["no conversation to analyse"]


@pytest.fixture
async def report_server(aiohttp_server: AiohttpServer) -> AsyncIterator[ReportServer]:
    state = ReportServer()
    app = web.Application()
    app.router.add_post(REPORTS_PATH, state.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    state.url = str(server.make_url(REPORTS_PATH))
    yield state


async def test_turns_are_reported_as_they_happen_and_the_final_report_last(
    report_server: ReportServer,
) -> None:
    sender = ReportSender(report_server.url, CALL, KEY, SECRET, retry=FAST)
    recorder = TranscriptRecorder(sender.turn)
    llm = ScriptedLLM({"Oh hi! Who is this?": ("Your coach, Alice!", [])})
    answered_at = time.time()
    sender.answered(answered_at)

    await talk(recorder, llm, coach_plan())
    await finish_call(
        sender,
        recorder.turns,
        ended_by="agent",
        session_usage=None,
        analysis_request=None,
        llm=None,
        instructions="",
        analysis_timeout_s=1,
        flush_timeout_s=10,
    )

    kinds = [(r.seq, r.kind) for r in report_server.reports]
    assert kinds == [(0, "answered"), (1, "turn"), (2, "turn"), (3, "turn"), (4, "final")]
    final = report_server.reports[-1].final
    assert final is not None and final.ended_by == "agent"
    assert [r.turn for r in report_server.reports[1:4]] == final.transcript


# ----------------------------------------------------------------------------- pure parts


def message(
    role: ChatRole, text: str, created_at: float, *, interrupted: bool = False
) -> ChatMessage:
    return ChatMessage(role=role, content=[text], created_at=created_at, interrupted=interrupted)


def test_recorder_clamps_dedupes_and_skips() -> None:
    recorder = TranscriptRecorder(lambda _turn: None)
    recorder.start(100.0)
    early = message("user", "Hello?", 99.5)
    recorder.add_message(early)
    recorder.add_message(early)  # the same message again (gate and event): taken once
    recorder.add_message(message("system", "be brief", 101.0))
    recorder.add_message(message("assistant", "  ", 101.0, interrupted=True))  # nothing said
    recorder.add_message(message("assistant", "x" * 9000, 102.25, interrupted=True))

    turns = recorder.turns
    assert [(t.role, t.at_s) for t in turns] == [("callee", 0.0), ("agent", 2.25)]
    assert len(turns[1].text) == 8000 and turns[1].interrupted


@pytest.mark.parametrize(
    ("answered", "agent", "reason", "expected"),
    [
        (False, False, None, "system"),
        (False, True, rtc.DisconnectReason.CLIENT_INITIATED, "system"),
        (True, True, rtc.DisconnectReason.ROOM_DELETED, "agent"),
        (True, True, rtc.DisconnectReason.CLIENT_INITIATED, "agent"),
        (True, False, rtc.DisconnectReason.CLIENT_INITIATED, "callee"),
        (True, False, rtc.DisconnectReason.ROOM_DELETED, "api"),
        (True, False, rtc.DisconnectReason.SIP_TRUNK_FAILURE, "system"),
        (True, False, None, "system"),
    ],
)
def test_who_ended_the_call(answered: bool, agent: bool, reason: int | None, expected: str) -> None:
    assert decide_ended_by(answered, agent, reason) == expected


def test_a_deleted_room_without_the_lines_leave_is_the_api() -> None:
    deleted, ours = rtc.DisconnectReason.ROOM_DELETED, rtc.DisconnectReason.CLIENT_INITIATED
    assert decide_ended_by(True, False, None, deleted) == "api"
    assert decide_ended_by(True, True, None, deleted) == "agent"
    assert decide_ended_by(True, False, None, ours) == "system"  # the job shut itself down
    assert decide_ended_by(True, False, rtc.DisconnectReason.CLIENT_INITIATED, deleted) == "callee"


class Leaving:
    def __init__(self, kind: int, reason: int) -> None:
        self.kind = kind
        self.disconnect_reason = reason


def test_only_the_phone_lines_first_leave_counts() -> None:
    end = CallEnd()
    end.answered = True
    observer = Leaving(rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, 1)
    end.on_participant_disconnected(cast(rtc.RemoteParticipant, observer))
    assert end.ended_by() == "system"
    sip = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
    end.on_participant_disconnected(cast(rtc.RemoteParticipant, Leaving(sip, 1)))
    end.on_participant_disconnected(cast(rtc.RemoteParticipant, Leaving(sip, 5)))
    assert end.ended_by() == "callee"


def test_usage_by_kind() -> None:
    usage = AgentSessionUsage(
        model_usage=[
            LLMModelUsage(provider="api.openai.com", model="gpt-4o-mini", input_tokens=900),
            STTModelUsage(provider="deepgram", model="nova-3", audio_duration=61.23456),
            TTSModelUsage(provider="cartesia", model="sonic-3", characters_count=420),
        ]
    )
    doc = usage_to_json(usage, {"input_tokens": 300, "output_tokens": 40})
    assert doc == {
        "llm": [
            {
                "provider": "api.openai.com",
                "model": "gpt-4o-mini",
                "input_tokens": 900,
                "output_tokens": 0,
            }
        ],
        "stt": [{"provider": "deepgram", "model": "nova-3", "audio_duration_s": 61.235}],
        "tts": [
            {"provider": "cartesia", "model": "sonic-3", "characters": 420, "audio_duration_s": 0}
        ],
        "analysis": {"input_tokens": 300, "output_tokens": 40},
    }
    assert json.loads(json.dumps(doc)) == doc


def test_an_oversized_final_report_keeps_the_turns_that_fit() -> None:
    turns = [
        TranscriptTurn(role="callee", text=f"{i} " + "y" * 7990, at_s=float(i)) for i in range(300)
    ]
    report = build_call_report(turns, None, {}, "callee")

    body = AgentReport(call_id=CALL, seq=9, kind="final", at=1.0, final=report).to_json()
    assert len(body) <= MAX_REPORT_BYTES
    assert 100 < len(report.transcript) < 300
    assert report.transcript == turns[: len(report.transcript)]
    assert report.analysis_errors == [
        f"transcript: only the first {len(report.transcript)} of 300 turns fit in the final"
        " report; all were reported one by one"
    ]


def test_a_turn_with_a_lone_surrogate_is_kept_with_a_replacement_character() -> None:
    """Half an emoji from a broken STT or LLM string ("\\ud83d") made the turn invalid: it
    was refused whole, raised out of the session's event handler, and was neither reported
    nor in the final report's transcript."""
    reported: list[TranscriptTurn] = []
    recorder = TranscriptRecorder(reported.append)
    recorder.start(100.0)
    recorder.add_message(message("user", "Great \ud83d thanks", 101.0))
    recorder.add_message(message("assistant", "Glad \ud83d\ude00 to help", 102.0))

    assert [t.text for t in recorder.turns] == ["Great \ufffd thanks", "Glad \U0001f600 to help"]
    assert reported == recorder.turns
    for turn in reported:  # each goes out as a report the server takes
        AgentReport.model_validate_json(
            AgentReport(call_id=CALL, seq=1, kind="turn", at=101.0, turn=turn).to_json()
        )
