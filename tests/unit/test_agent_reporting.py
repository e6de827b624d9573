"""ReportSender against a real HTTP server on 127.0.0.1 that checks every report as the
server does: the signature (`BodyVerifier`), the room grant naming the call, the model.

Loopback only (the server is in the test), so these tests do not use `no_network`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from agent.reporting import ReportSender, RetryPolicy
from common.contracts import (
    REPORTS_PATH,
    AgentReport,
    AmdVerdict,
    CallReport,
    TranscriptTurn,
)
from common.signing import BodyVerifier, Unverified

KEY, SECRET = "APItestkey", "test-secret-that-is-long-enough-for-hs256-0123456789"
CALL = "call-0123456789ab"
FAST = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=2.0, deadline_s=5.0)
SECRET_WORDS = "my card number is 4111"


@dataclass
class ReportServer:
    """Verifies like POST /agent/reports; answers from `script` (seq -> statuses in turn)."""

    url: str = ""
    script: dict[int, list[int]] = field(default_factory=dict)
    seen: list[tuple[int, str, int]] = field(default_factory=list)
    reports: list[AgentReport] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    hang: asyncio.Event | None = None
    verifier: BodyVerifier = field(default_factory=lambda: BodyVerifier(KEY, SECRET))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("Authorization", "")
        self.tokens.append(header.removeprefix("Bearer "))
        try:
            signed = self.verifier.verify(header, body)
        except Unverified as exc:
            return web.json_response({"status": "error", "error": str(exc)}, status=401)
        report = AgentReport.model_validate_json(body)
        assert signed.room == report.call_id == CALL
        if self.hang is not None:
            await self.hang.wait()
        statuses = self.script.get(report.seq, [])
        status = statuses.pop(0) if statuses else 200
        self.seen.append((report.seq, report.kind, status))
        if status != 200:
            return web.json_response(
                {"status": "error", "error": f"scripted {status}"}, status=status
            )
        duplicate = any(r.seq == report.seq for r in self.reports)
        self.reports.append(report)
        result = "duplicate" if duplicate else "applied"
        return web.json_response({"status": "success", "result": result})


@pytest.fixture
async def server(aiohttp_server: AiohttpServer) -> AsyncIterator[ReportServer]:
    state = ReportServer()
    app = web.Application()
    app.router.add_post(REPORTS_PATH, state.handle)
    test_server = await aiohttp_server(app, host="127.0.0.1")
    state.url = str(test_server.make_url(REPORTS_PATH))
    yield state
    if state.hang is not None:
        state.hang.set()  # let a held request finish before the server closes


def ticking_clock() -> Callable[[], float]:
    ticks = itertools.count()
    return lambda: 1_800_000_000.0 + next(ticks)


def make_sender(
    url: str | None, *, retry: RetryPolicy = FAST, session: aiohttp.ClientSession | None = None
) -> ReportSender:
    return ReportSender(url, CALL, KEY, SECRET, clock=ticking_clock(), retry=retry, session=session)


def final_report() -> CallReport:
    return CallReport(
        transcript=[TranscriptTurn(role="callee", text="Hello?", at_s=0.4)],
        summary="Alice answered.",
        ended_by="callee",
    )


async def within(awaitable: Awaitable[bool], seconds: float = 10.0) -> bool:
    return await asyncio.wait_for(awaitable, seconds)


async def test_reports_arrive_signed_in_order_with_consecutive_seq(server: ReportServer) -> None:
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.5)
    sender.turn(TranscriptTurn(role="callee", text="Hello?", at_s=0.4))
    sender.amd(AmdVerdict(category="human", reason="llm"))
    sender.turn(TranscriptTurn(role="agent", text="Hi Alice!", at_s=1.2, interrupted=True))
    sender.final(final_report())
    assert await within(sender.flush(10))
    await sender.aclose()

    assert [(r.seq, r.kind) for r in server.reports] == [
        (0, "answered"),
        (1, "turn"),
        (2, "amd"),
        (3, "turn"),
        (4, "final"),
    ]
    answered, turn, amd, turn2, final = server.reports
    assert answered.at == 1_700_000_000.5  # the moment given, not the clock's
    assert turn.turn == TranscriptTurn(role="callee", text="Hello?", at_s=0.4)
    assert turn.at == 1_800_000_000.0 and turn2.at > turn.at  # the clock at each report
    assert amd.amd == AmdVerdict(category="human", reason="llm")
    assert turn2.turn is not None and turn2.turn.interrupted
    assert final.final == final_report()
    assert sender.delivered == [0, 1, 2, 3, 4]


async def test_server_errors_are_retried_and_later_reports_wait(server: ReportServer) -> None:
    server.script = {0: [503, 503], 1: [429]}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    sender.turn(TranscriptTurn(role="callee", text="Hello?", at_s=0.0))
    sender.turn(TranscriptTurn(role="agent", text="Hi!", at_s=0.5))
    assert await within(sender.flush(10))
    await sender.aclose()

    assert server.seen == [
        (0, "answered", 503),
        (0, "answered", 503),
        (0, "answered", 200),
        (1, "turn", 429),
        (1, "turn", 200),
        (2, "turn", 200),
    ]
    assert sender.delivered == [0, 1, 2]


async def test_refused_reports_are_logged_once_and_skipped(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = {0: [409], 1: [401], 2: [400], 3: [404], 4: [413]}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    for text in ("one", "two", "three", SECRET_WORDS):
        sender.turn(TranscriptTurn(role="callee", text=text, at_s=1.0))
    sender.final(final_report())
    assert await within(sender.flush(10))
    await sender.aclose()

    assert [(seq, status) for seq, _, status in server.seen] == [
        (0, 409),
        (1, 401),
        (2, 400),
        (3, 404),
        (4, 413),
        (5, 200),
    ]
    assert sender.delivered == [5]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5
    assert f"call {CALL}: answered report #0 refused by the server" in warnings[0]
    assert "HTTP 409 (scripted 409)" in warnings[0]
    assert "turn report #1" in warnings[1] and "HTTP 401" in warnings[1]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for token in server.tokens:
        assert token not in caplog.text
    assert SECRET_WORDS not in caplog.text


async def test_a_forged_signature_is_refused_by_the_verifier(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    sender = ReportSender(server.url, CALL, KEY, "another-secret-" + "x" * 40, retry=FAST)
    sender.answered(1_700_000_000.0)
    assert await within(sender.flush(10))
    await sender.aclose()

    assert server.reports == [] and sender.delivered == []
    assert "HTTP 401 (token rejected" in caplog.text


async def test_a_dead_server_is_retried_until_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    retry = RetryPolicy(first_delay_s=0.02, max_delay_s=0.1, attempt_timeout_s=1.0, deadline_s=0.4)
    sender = make_sender(f"http://127.0.0.1:{port}{REPORTS_PATH}", retry=retry)
    started = time.monotonic()
    sender.answered(1_700_000_000.0)
    sender.final(final_report())
    assert await within(sender.flush(10))
    elapsed = time.monotonic() - started
    await sender.aclose()

    assert 0.8 <= elapsed < 5.0  # each report had its own 0.4 s deadline, one after the other
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert f"call {CALL}: answered report #0 not delivered: gave up after" in errors[0]
    assert f"call {CALL}: final report #1 not delivered: gave up after" in errors[1]
    assert sender.delivered == []


async def test_flush_times_out_and_close_names_what_is_pending(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.hang = asyncio.Event()
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    sender.turn(TranscriptTurn(role="callee", text="Hello?", at_s=0.0))

    started = time.monotonic()
    assert await sender.flush(0.2) is False
    assert time.monotonic() - started < 2.0
    await sender.aclose(0.1)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert f"call {CALL}: answered report #0 not delivered: still pending" in errors[0]
    assert f"call {CALL}: turn report #1 not delivered: still pending" in errors[1]
    sender.turn(TranscriptTurn(role="callee", text="late", at_s=9.0))  # after close: logged
    assert "turn report not sent: the sender is already closed" in caplog.text


async def test_a_slow_answer_counts_as_a_timeout_and_is_retried(server: ReportServer) -> None:
    server.hang = asyncio.Event()
    retry = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=0.2, deadline_s=5)
    sender = make_sender(server.url, retry=retry)
    sender.answered(1_700_000_000.0)
    await asyncio.sleep(0.5)  # at least one attempt timed out
    server.hang.set()
    assert await within(sender.flush(10))
    await sender.aclose()
    assert sender.delivered == [0]
    assert server.seen[-1] == (0, "answered", 200)


async def test_without_a_report_url_nothing_is_sent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.reporting")
    sender = make_sender(None)
    sender.answered(1_700_000_000.0)
    sender.final(final_report())
    assert await sender.flush(0.1)
    await sender.aclose()

    assert not sender.enabled and sender.delivered == []
    infos = [r.getMessage() for r in caplog.records if r.name == "agent.reporting"]
    assert infos == [f"call {CALL}: no report URL in the dispatch; reports are not sent"]


async def test_a_borrowed_session_is_not_closed(server: ReportServer) -> None:
    async with aiohttp.ClientSession() as http:
        sender = make_sender(server.url, session=http)
        sender.answered(1_700_000_000.0)
        await sender.aclose(10)
        assert not http.closed
    assert sender.delivered == [0]


async def test_an_invalid_report_is_logged_not_raised(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    sender = ReportSender(server.url, "x" * 101, KEY, SECRET, retry=FAST)  # call id too long
    sender.answered(1_700_000_000.0)
    await sender.aclose(1)
    assert "answered report #0 not sent: it is invalid" in caplog.text
    assert server.seen == []


def test_a_report_missing_its_body_says_so() -> None:
    from pydantic import ValidationError

    from common.contracts import AgentReport

    with pytest.raises(ValidationError, match="a turn report carries turn; it is missing"):
        AgentReport.model_validate({"call_id": "call-1", "seq": 1, "kind": "turn", "at": 1.0})
    with pytest.raises(ValidationError, match="a answered report carries no body, not turn"):
        AgentReport.model_validate(
            {
                "call_id": "call-1",
                "seq": 1,
                "kind": "answered",
                "at": 1.0,
                "turn": {"role": "agent", "text": "x", "at_s": 0},
            }
        )
