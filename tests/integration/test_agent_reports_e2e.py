"""The agent's report sender (agent/reporting.py) against the real server handler: what an
agent reports is what GET /calls/{id} shows, and a report for another call is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from agent.analysis import AnalysisResult
from agent.reporting import ReportSender, RetryPolicy
from agent.results import build_call_report
from agent.spool import ReportSpool, resend
from common.contracts import (
    REPORTS_PATH,
    AgentReport,
    AmdVerdict,
    CallReport,
    SuccessVerdict,
    TranscriptTurn,
)
from common.settings import DEV_API_KEY, DEV_API_SECRET
from common.signing import sign_body
from tests.conftest import AppFactory
from tests.helpers import wait_for
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


async def test_reports_for_an_unknown_call_are_logged_once_with_the_call(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent reporting to a server that never placed its call (PUBLIC_BASE_URL pointing
    at another deployment) was answered 404 and the server's log held only an access line
    without the call: now one WARNING names the call and the likely cause, and a burst of
    them is not a line each."""
    client = await quiet_app(start_app)
    with caplog.at_level(logging.INFO):
        for n in range(5):
            call_id = f"call-00000000000{n}"
            body = AgentReport(call_id=call_id, seq=0, kind="answered", at=time.time())
            data = body.to_json()
            token = sign_body(data, DEV_API_KEY, DEV_API_SECRET, room=call_id)
            resp = await client.post(
                REPORTS_PATH,
                data=data,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert resp.status == 404
    lines = [
        r.getMessage() for r in caplog.records if r.name == "handlers.reports" and "404" in r.msg
    ]
    assert len(lines) == 1, lines
    assert "call 'call-000000000000'" in lines[0] and "PUBLIC_BASE_URL" in lines[0], lines


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


class Outage:
    """In front of the real app, as a load balancer is: 502 while `down`, else the app's
    own answer to the same POST."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.down = True
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.down:
            self.refused += 1
            return web.json_response({"error": "bad gateway"}, status=502)
        headers = {k: request.headers[k] for k in ("Authorization", "Content-Type")}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.target, data=await request.read(), headers=headers) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Today's budget (a POST retried for 4 minutes, the job's flush 220 s), scaled down.
BUDGET = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=1.0, deadline_s=0.2)
# For a pass every server of which answers: a budget no loaded machine runs out of (a POST of
# 64 reports outlasted BUDGET's 0.2 s under a full `make test`, and the pass gave it up).
ANSWERED = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=10, deadline_s=10)


async def outage_front(
    client: TestClient[Any, Any],
    aiohttp_server: AiohttpServer,
    handler: Callable[[Outage], Handler] | None = None,
) -> tuple[Outage, str]:
    """An `Outage` in front of the app (its handler, or `handler` of it), and its report URL."""
    outage = Outage(str(client.make_url(REPORTS_PATH)))
    app = web.Application()
    app.router.add_post(REPORTS_PATH, outage.handle if handler is None else handler(outage))
    front = await aiohttp_server(app, host="127.0.0.1")
    return outage, str(front.make_url(REPORTS_PATH))


def spooling_sender(url: str, call_id: str, spool: ReportSpool, **options: Any) -> ReportSender:
    """A job's sender (retrying within BUDGET, keeping what it cannot deliver in `spool`)."""
    return ReportSender(
        url,
        call_id,
        DEV_API_KEY,
        DEV_API_SECRET,
        retry=BUDGET,
        linger_s=0,
        spool=spool,
        **options,
    )


async def test_a_final_report_outlives_an_outage_longer_than_its_retries(
    start_app: AppFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """The calls server away for longer than a job retries (4 minutes, then its process
    ends): the call's answer, turns and final report were dropped with an ERROR, and the call
    stayed `pending`, then `unavailable`, with no transcript. Now the job keeps them in the
    spool, and the worker sends them once the server is back."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    outage, url = await outage_front(client, aiohttp_server)
    spool = ReportSpool(tmp_path / "agent-reports")
    sender = spooling_sender(url, call_id, spool)
    hello = TranscriptTurn(role="agent", text="Hello Ann, this is the clinic.", at_s=0.4)
    sender.answered(time.time())
    sender.turn(hello)
    sender.final(CallReport(transcript=[hello], summary="Greeted Ann.", ended_by="agent"))
    await sender.aclose(1.0)  # the job ends, five times its POST's retry budget later

    assert outage.refused > 10
    assert (sender.delivered, sender.dropped, sender.spooled) == ([], [], [0, 1, 2])
    assert (spool.directory.stat().st_mode & 0o777) == 0o700
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["report_status"] == "pending" and call["transcript"] == []

    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=BUDGET, timeout_s=1.0) == 0
    assert len(list(spool.load())) == 1  # still away: kept for the next pass

    outage.down = False
    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=ANSWERED, timeout_s=5.0) == 1
    assert list(spool.directory.iterdir()) == []
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "in_progress" and call["report_status"] == "complete"
    assert call["transcript"] == [hello.model_dump()] and call["summary"] == "Greeted Ann."
    assert [e["event"] for e in call["timeline"] if e["event"].startswith("agent_")] == [
        "agent_answered",
        "agent_final",
    ]


async def test_a_server_back_before_the_job_ends_gets_the_reports_from_the_job(
    start_app: AppFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """With a spool, a POST is retried past its budget for as long as the job runs: the
    reports after it were sent while an earlier one was given up, and reached the server out
    of order (a turn after the final report is a duplicate, never shown)."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    outage, url = await outage_front(client, aiohttp_server)
    spool = ReportSpool(tmp_path / "agent-reports")
    sender = spooling_sender(url, call_id, spool)
    sender.answered(time.time())
    assert not await sender.flush(0.5)  # past the budget, still trying
    outage.down = False
    sender.final(CallReport(ended_by="callee"))
    await sender.aclose(5.0)
    assert (sender.delivered, sender.dropped, sender.spooled) == ([0, 1], [], [])
    assert list(spool.load()) == []


async def test_a_job_killed_while_it_still_retries_leaves_its_reports_in_the_spool(
    start_app: AppFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """The server away, the job's process killed while it still retried its final report
    (the worker's stop timeout for its jobs, out of memory): the reports were only in the
    process's memory, and were lost. They are in the spool a few seconds into the job's
    last flush; the file goes if they are delivered after all."""
    client = await quiet_app(start_app)
    call_ids = [await place(client), await place(client, "+14155557761")]
    outage, url = await outage_front(client, aiohttp_server)
    spool = ReportSpool(tmp_path / "agent-reports")
    http = aiohttp.ClientSession()  # the killed process's, closed here rather than by it
    senders = [
        spooling_sender(url, call_id, spool, session=http, spool_after_s=0.1)
        for call_id in call_ids
    ]
    for sender in senders:
        sender.final(CallReport(summary="Greeted Ann.", ended_by="callee"))
    killed, survivor = (asyncio.create_task(s.aclose(60.0)) for s in senders)

    async def both_kept() -> bool:
        return len(list(spool.load())) == 2

    await wait_for(both_kept, timeout=5)
    killed.cancel()  # as the process is killed: nothing more runs in it
    with contextlib.suppress(asyncio.CancelledError):
        await killed
    outage.down = False
    await asyncio.wait_for(survivor, 10)  # delivered after all: its file goes
    await http.close()
    assert senders[1].delivered == [0] and senders[1].spooled == []
    (left,) = spool.load()
    assert left.call_id == call_ids[0]

    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=ANSWERED, timeout_s=5.0) == 1
    for call_id in call_ids:
        call = await (await client.get(f"/calls/{call_id}")).json()
        assert call["report_status"] == "complete" and call["summary"] == "Greeted Ann."


async def test_a_server_still_away_holds_back_only_its_own_spooled_reports(
    start_app: AppFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """The oldest spooled file's server does not answer (away for good: PUBLIC_BASE_URL
    changed since, a server taken down): every later file, for a server that answers, waited
    behind it, pass after pass, and never went. Now only that server's files wait, and a
    pass tries that server once, not once a file."""
    client = await quiet_app(start_app)
    away = [await place(client), await place(client, "+14155557762")]
    call_id = await place(client, "+14155557761")
    tried: list[str] = []

    def handler(outage: Outage) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            tried.append(json.loads(await request.read())["call_id"])
            return await outage.handle(request)

        return handle

    _, front = await outage_front(client, aiohttp_server, handler)
    spool = ReportSpool(tmp_path / "agent-reports")
    final = CallReport(summary="Greeted Ann.", ended_by="callee")
    for url, call in (
        *((front, call) for call in away),
        (str(client.make_url(REPORTS_PATH)), call_id),
    ):
        report = AgentReport(call_id=call, seq=0, kind="final", at=time.time(), final=final)
        assert spool.save(url, call, [report.to_json()])

    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=BUDGET, timeout_s=5.0) == 1
    assert [left.call_id for left in spool.load()] == away
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["report_status"] == "complete" and call["summary"] == "Greeted Ann."
    assert tried and set(tried) == {away[0]}
    tried.clear()
    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=BUDGET, timeout_s=5.0) == 0
    assert tried and set(tried) == {away[0]}  # still tried each pass, once


async def test_a_spooled_call_is_resent_in_order_or_not_at_all(
    start_app: AppFactory, aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """A spooled file of more reports than one POST carries (64: a long call's turns), the
    server away for its first POST and back for the next: the pass gave the first up and
    went on, and the final report reached the server before the call's answer (the call
    read as never answered beside its transcript until the next pass). Now what follows a
    POST given up waits with it for the next pass, and arrives after it."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    answered_away = True

    def handler(outage: Outage) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            if answered_away and b'"answered"' in await request.read():
                outage.refused += 1
                return web.json_response({"error": "bad gateway"}, status=502)
            return await outage.handle(request)

        return handle

    outage, front = await outage_front(client, aiohttp_server, handler)
    outage.down = False
    now = time.time()
    turns = [TranscriptTurn(role="agent", text=f"Line {n}.", at_s=float(n)) for n in range(80)]
    reports = [
        AgentReport(call_id=call_id, seq=0, kind="answered", at=now),
        *(
            AgentReport(call_id=call_id, seq=n + 1, kind="turn", at=now, turn=turn)
            for n, turn in enumerate(turns)
        ),
        AgentReport(
            call_id=call_id,
            seq=len(turns) + 1,
            kind="final",
            at=now,
            final=CallReport(transcript=turns, summary="A long call.", ended_by="callee"),
        ),
    ]
    spool = ReportSpool(tmp_path / "agent-reports")
    assert spool.save(front, call_id, [r.to_json() for r in reports])

    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=BUDGET, timeout_s=5.0) == 0
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["report_status"] == "pending" and call["answered_at"] is None

    answered_away = False
    assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=ANSWERED, timeout_s=5.0) == 1
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "in_progress" and call["report_status"] == "complete"
    agent_events = [e["event"] for e in call["timeline"] if e["event"].startswith("agent_")]
    assert agent_events == ["agent_answered", "agent_final"]


async def test_spooled_reports_the_server_refuses_are_not_said_delivered(
    start_app: AppFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spooled file the server refused for good (404: a call it does not know, its
    database replaced meanwhile) was removed with the line 'call ...'s 1 reports delivered'
    after the sender's WARNING that it was refused: the log said both. Now it says refused."""
    client = await quiet_app(start_app)
    spool = ReportSpool(tmp_path / "agent-reports")
    report = AgentReport(call_id="call-000000000000", seq=0, kind="answered", at=time.time())
    assert spool.save(str(client.make_url(REPORTS_PATH)), report.call_id, [report.to_json()])
    with caplog.at_level(logging.INFO, logger="agent.spool"):
        assert await resend(spool, DEV_API_KEY, DEV_API_SECRET, retry=ANSWERED, timeout_s=5.0) == 1
    assert list(spool.load()) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.spool"]
    assert lines == [
        "report spool: call call-000000000000's reports sent again: 0 delivered, 1 refused by"
        " the server for good; its file is removed"
    ]


async def test_a_report_the_spool_could_not_take_is_not_said_kept(
    start_app: AppFactory,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server away, the job's reports written to the spool 5 s into its last flush; a
    report queued after that, and the spool no longer writable at the flush's end (a full
    disk): the job logged the ERROR that they were not kept, then a WARNING that all of
    them were, and counted the newer one spooled though no file held it. Now only what the
    earlier file holds is said kept; the newer one is named not delivered."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    outage, url = await outage_front(client, aiohttp_server)
    spool = ReportSpool(tmp_path / "agent-reports")
    sender = spooling_sender(url, call_id, spool, spool_after_s=0.1)
    sender.answered(time.time())
    closing = asyncio.create_task(sender.aclose(1.0))

    async def kept() -> bool:
        return len(list(spool.load())) == 1

    await wait_for(kept, timeout=5)
    sender.final(CallReport(summary="Greeted Ann.", ended_by="callee"))
    monkeypatch.setattr(spool, "save", lambda *_args: None)  # as a full disk's ERROR says
    await asyncio.wait_for(closing, 10)
    assert (sender.spooled, sender.dropped) == ([0], [1])
    (left,) = spool.load()
    assert [r.seq for r in left.reports] == [0]
    assert f"call {call_id}: 1 reports not delivered within 1 s, kept in the report spool" in (
        caplog.text
    )
