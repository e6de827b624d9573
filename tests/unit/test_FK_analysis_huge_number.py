"""An analysis answer whose `number` field holds an integer too large for a float (JSON allows
any number of digits; a callee who dictates "one followed by four hundred zeros" as their
budget gets one) raised OverflowError out of the value check (`math.isfinite` of that int),
out of `analyze` and `finish_call`: the job logged "the final report failed" and no final
report was sent, so the call kept no summary, verdict or extracted fields and its report
stayed pending until it read `unavailable`. Now that one value is dropped and named, like any
other value that does not fit, and the final report goes out with the rest.

The real `openai.LLM` plugin talks to the fake OpenAI server of test_agent_analysis, and the
report goes to the fake report server of test_agent_reporting, both on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from livekit.plugins import openai

from agent import analysis
from agent.analysis import validate_value
from agent.reporting import ReportSender
from agent.results import finish_call
from common.config_store.model import AnalysisField
from tests.unit.test_agent_analysis import (
    GOOD_ANSWER,
    REQUEST,
    TRANSCRIPT,
    FakeOpenAI,
    fake_openai,
    make_llm,
)
from tests.unit.test_agent_reporting import CALL, FAST, KEY, SECRET, ReportServer, server

__all__ = ["fake_openai", "make_llm", "server"]  # fixtures

HUGE = "1" + "0" * 400


def test_an_integer_too_large_for_a_float_is_no_number() -> None:
    value, problem = validate_value(AnalysisField(type="number"), int(HUGE))
    assert value is None
    assert problem is not None and problem.startswith("expected a number, got 1000")


async def test_a_huge_number_in_the_answer_still_sends_the_final_report(
    fake_openai: FakeOpenAI, make_llm: Callable[[str], openai.LLM], server: ReportServer
) -> None:
    answer = json.dumps(GOOD_ANSWER).replace('"budget": 40', f'"budget": {HUGE}')
    assert HUGE in answer
    fake_openai.answer = answer
    sender = ReportSender(server.url, CALL, KEY, SECRET, retry=FAST, linger_s=0)

    report = await finish_call(
        sender,
        TRANSCRIPT,
        ended_by="callee",
        session_usage=None,
        analysis_request=REQUEST,
        llm=make_llm(fake_openai.base_url),
        instructions="You are a cricket coach calling Alice.",
        analysis_timeout_s=30,
        flush_timeout_s=10,
    )

    assert [r.kind for r in server.reports] == ["final"]
    (sent,) = server.reports
    assert sent.final == report
    assert report.summary == GOOD_ANSWER["summary"]
    assert report.success is not None and report.success.achieved is True
    assert report.extracted is not None
    assert "budget" not in report.extracted
    assert report.extracted["age"] == 30 and report.extracted["level"] == "club"
    assert len(report.analysis_errors) == 1
    assert report.analysis_errors[0].startswith("extracted.budget: expected a number, got 1000")


async def test_an_answer_that_cannot_be_read_fails_the_analysis_not_the_report(
    fake_openai: FakeOpenAI,
    make_llm: Callable[[str], openai.LLM],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Whatever else reading an answer may raise (a bug not found yet): the analysis fails,
    # the final report still goes, and the log does not quote the answer (what was said).
    def broken(_request: object, text: str) -> None:
        raise ValueError(f"cannot read {text}")

    monkeypatch.setattr(analysis, "read_answer", broken)
    fake_openai.answer = json.dumps(GOOD_ANSWER)

    result = await analysis.analyze(
        make_llm(fake_openai.base_url),
        REQUEST,
        TRANSCRIPT,
        context_instructions="You are a cricket coach calling Alice.",
        timeout_s=30,
    )

    assert result.errors == ["analysis failed: unexpected error (ValueError)"]
    assert "club" not in caplog.text  # the answer's words
