"""A call that talks past the transcript's 2,000 turns: its final report says how many
turns were not kept (nor analysed), and the agent's WARNING names the call.

Before, the turns after the 2,000th were dropped with a WARNING that named no call (among a
worker's many), and the final report (what the customer's `call.report` carries) read as a
whole transcript: its summary and success verdict, of the first 2,000 turns only, said
nothing of the end of the call, and nothing said that there had been more."""

from __future__ import annotations

import logging

import pytest
from livekit.agents.llm import ChatMessage, ChatRole

from agent.reporting import ReportSender
from agent.results import TranscriptRecorder, finish_call
from common.config_store.model import AnalysisRequest
from common.contracts import MAX_TURNS, CallReport
from tests.unit.test_agent_reporting import CALL, KEY, SECRET


def long_call(turns: int) -> TranscriptRecorder:
    recorder = TranscriptRecorder(lambda _turn: None, CALL)
    recorder.start(1000.0)
    for n in range(turns):
        role: ChatRole = "user" if n % 2 else "assistant"
        recorder.add_message(ChatMessage(role=role, content=[f"turn {n}"], created_at=1001.0 + n))
    return recorder


async def final_report(recorder: TranscriptRecorder) -> CallReport:
    return await finish_call(
        ReportSender(None, CALL, KEY, SECRET),
        recorder.turns,
        ended_by="callee",
        session_usage=None,
        analysis_request=AnalysisRequest(summary=True),
        llm=None,
        instructions="",
        analysis_timeout_s=1,
        flush_timeout_s=1,
        turns_dropped=recorder.dropped,
    )


@pytest.mark.usefixtures("no_network")
async def test_the_final_report_says_the_turns_past_the_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "agent.results")
    recorder = long_call(MAX_TURNS + 37)
    assert recorder.dropped == 37
    assert [r.getMessage() for r in caplog.records] == [
        f"call {CALL}: transcript is full (2000 turns); later turns are dropped"
    ]

    report = await final_report(recorder)

    assert len(report.transcript) == MAX_TURNS
    assert report.transcript[-1].text == f"turn {MAX_TURNS - 1}"
    assert report.analysis_errors == [
        "analysis failed: no LLM for this call",
        "transcript: the call's 37 turn(s) after its first 2000 were not kept (a transcript"
        " keeps at most that many), nor analysed",
    ]


@pytest.mark.usefixtures("no_network")
async def test_a_call_within_the_cap_says_nothing_of_it() -> None:
    recorder = long_call(MAX_TURNS)
    assert recorder.dropped == 0
    report = await final_report(recorder)
    assert len(report.transcript) == MAX_TURNS
    assert report.analysis_errors == ["analysis failed: no LLM for this call"]
