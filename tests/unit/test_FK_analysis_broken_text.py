"""What the LLM writes in its analysis answer holding a lone surrogate (half an emoji, JSON
"\\ud83d") or a NUL ("\\u0000"), which no database keeps: one in the success verdict's reason
raised ValidationError out of `read_answer` (before 23c0017 out of `finish_call` too: no final
report at all), one in an extracted string value lost every extracted value of the call (the
final report leaves out what the server would refuse), one in the summary lost the summary.
Now each such character is kept as U+FFFD, as a transcript turn's is, and nothing else goes.

The real `openai.LLM` plugin talks to the fake OpenAI server of test_agent_analysis, and the
report goes to the fake report server of test_agent_reporting, both on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from livekit.plugins import openai

from agent.analysis import read_answer
from agent.reporting import ReportSender
from agent.results import finish_call
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


def broken_answer(bad: str) -> str:
    answer = json.loads(json.dumps(GOOD_ANSWER))
    answer["summary"] = f"Alice booked a lesson {bad}."
    answer["success"]["reason"] = f"She said yes {bad}"
    answer["extracted"]["json"] = f"alice{bad}@example.com"
    return json.dumps(answer)  # the bad character as a JSON escape, as an LLM writes it


@pytest.mark.parametrize("bad", ["\ud83d", "\x00"], ids=["lone-surrogate", "nul"])
def test_broken_characters_are_replaced_not_refused(bad: str) -> None:
    result = read_answer(REQUEST, broken_answer(bad))

    assert result.errors == []
    assert result.summary == "Alice booked a lesson \ufffd."
    assert result.success is not None and result.success.reason == "She said yes \ufffd"
    assert result.extracted is not None
    assert result.extracted["json"] == "alice\ufffd@example.com"
    assert result.extracted["age"] == 30


@pytest.mark.parametrize("bad", ["\ud83d", "\x00"], ids=["lone-surrogate", "nul"])
async def test_the_final_report_keeps_the_analysis(
    bad: str,
    fake_openai: FakeOpenAI,
    make_llm: Callable[[str], openai.LLM],
    server: ReportServer,
) -> None:
    fake_openai.answer = broken_answer(bad)
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

    (sent,) = server.reports
    assert sent.kind == "final" and sent.final == report
    assert report.analysis_errors == []
    assert report.summary == "Alice booked a lesson \ufffd."
    assert report.success is not None and report.success.achieved is True
    assert report.extracted is not None
    assert report.extracted["json"] == "alice\ufffd@example.com"
    assert report.extracted["level"] == "club"
