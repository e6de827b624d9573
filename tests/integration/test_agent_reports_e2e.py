"""The agent's report sender (agent/reporting.py) against the real server handler: what an
agent reports is what GET /calls/{id} shows, and a report for another call is refused."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from agent.analysis import AnalysisResult
from agent.reporting import ReportSender
from agent.results import build_call_report
from common.contracts import REPORTS_PATH, AmdVerdict, CallReport, SuccessVerdict, TranscriptTurn
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_report_limits import fill_turns
from tests.integration.test_webhooks import place, quiet_app

Client = TestClient[Any, Any]


async def test_an_agents_reports_reach_the_call(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client, "+14155557760")
    url = str(client.make_url(REPORTS_PATH))
    sender = ReportSender(url, call_id, DEV_API_KEY, DEV_API_SECRET)
    answered = time.time()
    hello = TranscriptTurn(role="agent", text="Hello Ann, this is the clinic.", at_s=0.4)
    sender.answered(answered)
    sender.amd(AmdVerdict(category="human", reason="llm"))
    sender.turn(hello)
    sender.final(
        CallReport(
            transcript=[hello],
            summary="The agent greeted Ann.",
            success=SuccessVerdict(achieved=True, reason="greeted"),
            extracted={"greeted": True},
            usage={"llm": [{"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 9}]},
            ended_by="agent",
        )
    )
    assert await sender.flush(10)
    await sender.aclose(1)
    assert sender.delivered == [0, 1, 2, 3]
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "in_progress" and call["amd"] == "human"
    assert call["report_status"] == "complete" and call["ended_by"] == "agent"
    assert call["transcript"] == [hello.model_dump()]
    assert call["extracted"] == {"greeted": True} and call["usage"]["llm"][0]["input_tokens"] == 9


async def test_a_sender_for_another_call_is_refused(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    mine = await place(client)
    url = str(client.make_url(REPORTS_PATH))
    sender = ReportSender(url, "call-000000000000", DEV_API_KEY, DEV_API_SECRET)
    sender.answered(time.time())
    await sender.flush(10)
    await sender.aclose(1)
    assert sender.delivered == []  # 404: the server knows no such call; nothing retried
    assert (await (await client.get(f"/calls/{mine}")).json())["status"] == "dialing"


async def test_a_final_report_goes_out_without_what_the_server_would_refuse(
    start_app: AppFactory,
) -> None:
    """A model's usage with a NaN in it, a value the LLM wrote with a lone surrogate: the
    agent leaves those parts out and says so, and the rest of its final report arrives."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    hello = TranscriptTurn(role="agent", text="Hello Ann, this is the clinic.", at_s=0.4)
    found = AnalysisResult(summary="Greeted Ann.", extracted={"name": "Ann \ud800"})
    final = build_call_report([hello], found, {"stt": [{"audio_s": float("nan")}]}, "agent")
    assert final.usage == {} and final.extracted is None
    sender = ReportSender(str(client.make_url(REPORTS_PATH)), call_id, DEV_API_KEY, DEV_API_SECRET)
    sender.final(final)
    await sender.aclose(10)
    assert sender.delivered == [0]
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["report_status"] == "complete" and call["summary"] == "Greeted Ann."
    assert call["transcript"] == [hello.model_dump()]
    assert call["analysis_errors"] == [
        "extracted: left out, the server would refuse it",
        "usage: left out, the server would refuse it",
    ]


async def test_a_turn_beyond_the_calls_limit_is_not_retried(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The server keeps MAX_TURNS turns per call; the agent's next one is refused once, with
    one WARNING line, and the reports of its POST still count (not retried for 4 minutes)."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    fill_turns(client, call_id)  # numbered from 10,000: the sender's own start at 0
    sender = ReportSender(str(client.make_url(REPORTS_PATH)), call_id, DEV_API_KEY, DEV_API_SECRET)
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="agent.reporting"):
        sender.answered(time.time())
        sender.turn(TranscriptTurn(role="callee", text="Are you still there?", at_s=900.0))
        sender.final(CallReport(summary="A long call.", ended_by="callee"))
        assert await sender.flush(10)
    await sender.aclose(1)
    assert time.monotonic() - started < 5
    assert sender.delivered == [0, 2]
    lines = [r for r in caplog.records if r.name == "agent.reporting"]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (
            logging.WARNING,
            f"call {call_id}: turn report #1 refused by the server, not retried: too_many_turns"
            f" (call {call_id} already holds 2,000 transcript turns; no more are kept)",
        )
    ]
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["summary"] == "A long call." and call["status"] == "in_progress"
