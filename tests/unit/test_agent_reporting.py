"""ReportSender against a real HTTP server on 127.0.0.1 that checks every report as the
server does: the signature (`BodyVerifier`), the room grant naming the call, the model.

Loopback only (the server is in the test), so these tests do not use `no_network`.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from agent.reporting import REPORT_LINGER_S, ReportSender, RetryPolicy, _Queued, take_batch
from common.contracts import (
    MAX_REPORT_BYTES,
    MAX_REPORTS_PER_POST,
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
    """Verifies like POST /agent/reports (one report, or an array of them); answers from
    `script` (a POST's first seq -> statuses in turn), or `refuse` (seq -> the status of
    every POST that holds it)."""

    url: str = ""
    script: dict[int, list[int]] = field(default_factory=dict)
    refuse: dict[int, int] = field(default_factory=dict)
    seen: list[tuple[int, str, int]] = field(default_factory=list)
    posts: list[list[int]] = field(default_factory=list)
    reports: list[AgentReport] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    hang: asyncio.Event | None = None
    hold: dict[int, asyncio.Event] = field(default_factory=dict)  # a lone report's POST waits
    full_at: int | None = None  # from this seq on, a turn is `too_many_turns`
    verifier: BodyVerifier = field(default_factory=lambda: BodyVerifier(KEY, SECRET))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        header = request.headers.get("Authorization", "")
        self.tokens.append(header.removeprefix("Bearer "))
        try:
            signed = self.verifier.verify(header, body)
        except Unverified as exc:
            return web.json_response({"status": "error", "error": str(exc)}, status=401)
        doc = json.loads(body)
        batch = isinstance(doc, list)
        reports = [AgentReport.model_validate(d) for d in (doc if batch else [doc])]
        assert batch is (len(reports) > 1)  # a lone report goes as an object
        assert all(signed.room == r.call_id == CALL for r in reports)
        if self.hang is not None:
            await self.hang.wait()
        if not batch and reports[0].seq in self.hold:
            await self.hold[reports[0].seq].wait()
        first = reports[0]
        statuses = self.script.get(first.seq, [])
        status = statuses.pop(0) if statuses else 200
        status = next((self.refuse[r.seq] for r in reports if r.seq in self.refuse), status)
        self.seen.append((first.seq, first.kind, status))
        self.posts.append([r.seq for r in reports])
        if status != 200:
            return web.json_response(
                {"status": "error", "error": f"scripted {status}"}, status=status
            )
        results = []
        for report in reports:
            full = self.full_at is not None and report.seq >= self.full_at
            if full and report.kind == "turn":
                results.append({"seq": report.seq, "result": "too_many_turns", "error": "full"})
                continue
            duplicate = any(r.seq == report.seq for r in self.reports)
            self.reports.append(report)
            results.append({"seq": report.seq, "result": "duplicate" if duplicate else "applied"})
        if batch:
            return web.json_response({"status": "success", "results": results})
        return web.json_response({"status": "success", "result": results[0]["result"]})


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
    url: str | None,
    *,
    retry: RetryPolicy = FAST,
    session: aiohttp.ClientSession | None = None,
    linger_s: float = REPORT_LINGER_S,
) -> ReportSender:
    return ReportSender(
        url,
        CALL,
        KEY,
        SECRET,
        clock=ticking_clock(),
        retry=retry,
        session=session,
        linger_s=linger_s,
    )


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
    assert server.posts == [[0, 1, 2, 3, 4]] and sender.posts == 1  # queued at once: one POST


async def test_reports_are_signed_in_the_name_of_the_agents_host(server: ReportServer) -> None:
    """The server reads each agent host's clock apart from the others' (by its tokens'
    `name`): unnamed, one host minutes behind beside another in time was never allowed for."""
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.5)
    assert await within(sender.flush(10))
    await sender.aclose()
    assert server.tokens
    for token in server.tokens:
        assert server.verifier.verify_token(token).signer == socket.gethostname()[:64]


async def test_server_errors_are_retried_and_later_reports_wait(server: ReportServer) -> None:
    """A POST is retried as a whole; what queues meanwhile waits, and goes in the next POST."""
    server.script = {0: [503, 503], 1: [429]}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    while not server.seen:  # the answer is out (and refused once)
        await asyncio.sleep(0.005)
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
    ]
    assert server.posts == [[0], [0], [0], [1, 2], [1, 2]]
    assert sender.delivered == [0, 1, 2] and sender.posts == 2


async def test_a_refused_batch_goes_again_one_report_at_a_time(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One report the server cannot take (400) never takes the others of its POST with it."""
    server.refuse = {2: 400}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    for text in ("one", "two", "three"):
        sender.turn(TranscriptTurn(role="callee", text=text, at_s=1.0))
    sender.final(final_report())
    assert await within(sender.flush(10))
    await sender.aclose()

    assert server.posts == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    assert sender.delivered == [0, 1, 3, 4]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"call {CALL}: 5 reports #0-#4 (answered, turn, turn, turn, final) refused by the"
        " server, not retried: HTTP 400 (scripted 400)",
        f"call {CALL}: turn report #2 refused by the server, not retried: HTTP 400 (scripted 400)",
    ]


async def test_a_turn_the_call_cannot_keep_is_named_and_the_rest_count(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.full_at = 1
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    sender.turn(TranscriptTurn(role="callee", text="one", at_s=1.0))
    sender.final(final_report())
    assert await within(sender.flush(10))
    await sender.aclose()
    assert server.posts == [[0, 1, 2]] and sender.delivered == [0, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"call {CALL}: turn report #1 refused by the server, not retried: too_many_turns (full)"
    ]


async def test_turns_wait_for_company_up_to_the_linger(server: ReportServer) -> None:
    """A turn is held back up to `linger_s` for the reports after it; an answer or a final
    report goes at once and takes what waits with it."""
    sender = make_sender(server.url, linger_s=0.3)
    sender.turn(TranscriptTurn(role="callee", text="one", at_s=1.0))
    await asyncio.sleep(0.05)
    sender.turn(TranscriptTurn(role="agent", text="two", at_s=2.0))
    await asyncio.sleep(0.1)
    assert server.posts == []  # still within the linger of the first turn
    started = time.monotonic()
    while not server.posts:  # sent once the first turn's linger is over, without a flush
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.01)
    assert server.posts == [[0, 1]]

    long_sender = make_sender(server.url, linger_s=60)
    long_sender.turn(TranscriptTurn(role="callee", text="three", at_s=3.0))
    await asyncio.sleep(0.05)
    long_sender.final(final_report())  # goes at once, with the turn before it
    started = time.monotonic()
    while len(server.posts) < 2:
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.01)
    assert server.posts == [[0, 1], [0, 1]]
    assert [r.kind for r in server.reports[2:]] == ["turn", "final"]
    await sender.aclose()
    await long_sender.aclose()


def queued(*sizes: int) -> collections.deque[_Queued]:
    report = AgentReport(call_id=CALL, seq=0, kind="answered", at=1.0)
    return collections.deque(_Queued(report, b"x" * size, 0.0) for size in sizes)


def test_a_post_holds_at_most_its_count_and_bytes_and_always_one() -> None:
    waiting = queued(*[10] * (MAX_REPORTS_PER_POST + 3))
    assert len(take_batch(waiting)) == MAX_REPORTS_PER_POST and len(waiting) == 3
    half = MAX_REPORT_BYTES // 2
    waiting = queued(half, half - 2, 1, MAX_REPORT_BYTES + 5, 1)
    # The array's brackets and comma make two halves one byte too many; the lone big one
    # still goes (on its own: the server refuses it with 413, and only it).
    assert [len(q.body) for q in take_batch(waiting)] == [half]
    assert [len(q.body) for q in take_batch(waiting)] == [half - 2, 1]
    assert [len(q.body) for q in take_batch(waiting)] == [MAX_REPORT_BYTES + 5]
    assert [len(q.body) for q in take_batch(waiting)] == [1]
    assert not waiting


async def test_a_401_is_retried_where_reports_are_kept_for_later(server: ReportServer) -> None:
    """A 401 (the server refused the signature: a key rotated on one side only, a clock far
    off) is refused for good by a plain sender, but retried by one whose reports are kept
    for later (a spool's pass, `hold_back`): the spool removed its file, and the call's
    reports were lost, though they arrive once the keys agree again."""
    server.script = {0: [401, 401]}
    sender = ReportSender(
        server.url, CALL, KEY, SECRET, clock=ticking_clock(), retry=FAST, hold_back=True
    )
    sender.resend(AgentReport(call_id=CALL, seq=0, kind="answered", at=1_700_000_000.0))
    assert await within(sender.flush(10))
    await sender.aclose()
    assert [status for _, _, status in server.seen] == [401, 401, 200]
    assert (sender.delivered, sender.refused) == ([0], [])


async def test_refused_reports_are_logged_once_and_skipped(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.script = {0: [409], 1: [401], 2: [400], 3: [404], 4: [413]}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    assert await within(sender.flush(10))
    for text in ("one", "two", "three", SECRET_WORDS):  # each in a POST of its own
        sender.turn(TranscriptTurn(role="callee", text=text, at_s=1.0))
        assert await within(sender.flush(10))
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


@pytest.mark.parametrize(
    "answer",
    [
        web.Response(text="<html>Welcome!</html>", content_type="text/html"),
        web.Response(status=204),
        web.json_response({"ok": True}),
    ],
)
async def test_an_answer_that_is_not_the_servers_is_no_delivery(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture, answer: web.Response
) -> None:
    """PUBLIC_BASE_URL naming a web site that answers 200 to any POST: every report counted
    delivered, none stored, and nothing said in the agent's log."""
    posts: list[bytes] = []

    async def catch_all(request: web.Request) -> web.Response:
        posts.append(await request.read())
        return answer

    app = web.Application()
    app.router.add_post(REPORTS_PATH, catch_all)
    site = await aiohttp_server(app, host="127.0.0.1")
    sender = make_sender(str(site.make_url(REPORTS_PATH)))
    sender.answered(1_700_000_000.0)
    sender.final(final_report())
    await sender.aclose(10)

    assert len(posts) == 1  # not sent again: another POST would be answered alike
    assert (sender.delivered, sender.refused) == ([], [0, 1])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"call {CALL}: 2 reports #0-#1 (answered, final) refused" in warning
    assert "not the calls server's answer to a report" in warning
    assert "PUBLIC_BASE_URL" in warning


async def test_an_answer_cut_off_midway_is_retried_not_refused(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The calls server's 200 cut off midway (a connection reset, a timeout) was taken for
    another site's page: the POST's reports refused for good, not sent again, and a warning
    asking whether the report URL is the calls server. The server may have kept them or not:
    they are sent again (it keeps each once, by seq)."""
    state = ReportServer()
    cut: list[bool] = []

    async def cut_off_once(request: web.Request) -> web.StreamResponse:
        if cut:
            return await state.handle(request)
        cut.append(True)
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 200
        await response.prepare(request)
        await response.write(b'{"status": "succ')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post(REPORTS_PATH, cut_off_once)
    site = await aiohttp_server(app, host="127.0.0.1")
    retry = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=2, deadline_s=10)
    sender = make_sender(str(site.make_url(REPORTS_PATH)), retry=retry)
    sender.answered(1_700_000_000.0)
    assert await within(sender.flush(10))
    await sender.aclose()

    assert cut and (sender.delivered, sender.refused) == ([0], [])
    assert "not the calls server's answer" not in caplog.text


async def test_a_report_url_that_redirects_says_where_to(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    """PUBLIC_BASE_URL=http://... behind a load balancer that sends http to https: each POST
    was refused with a bare 'HTTP 301', which said nothing of the setting to fix."""

    async def to_https(_request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("https://calls.example.com/agent/reports")

    app = web.Application()
    app.router.add_post(REPORTS_PATH, to_https)
    site = await aiohttp_server(app, host="127.0.0.1")
    sender = make_sender(str(site.make_url(REPORTS_PATH)))
    sender.answered(1_700_000_000.0)
    await sender.aclose(10)

    assert (sender.delivered, sender.refused) == ([], [0])
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.endswith(
        "HTTP 301 (the report URL redirects to https://calls.example.com/agent/reports;"
        " reports do not follow redirects: set PUBLIC_BASE_URL to where it leads)"
    )


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

    assert 0.4 <= elapsed < 5.0  # the POST of both had its 0.4 s deadline
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert (
        f"call {CALL}: 2 reports #0-#1 (answered, final) not delivered: gave up after" in errors[0]
    )
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
    assert time.monotonic() - started < 4.0
    await sender.aclose(0.1)

    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one line for them all (a line each: thousands for a long call)
    assert (
        f"call {CALL}: 2 reports #0-#1 (answered, turn) not delivered: still pending" in (errors[0])
    )
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


@pytest.mark.parametrize("kind", ["answered", "amd", "do_not_call", "final"])
async def test_what_goes_at_once_takes_the_waiting_turns_with_it(
    server: ReportServer, kind: str
) -> None:
    """A machine's verdict held back 5 s reached the server after the agent's hang-up had
    settled the call `completed`: every report but a turn goes at once."""
    sender = make_sender(server.url, linger_s=60)
    sender.turn(TranscriptTurn(role="callee", text="hello", at_s=1.0))
    await asyncio.sleep(0.05)
    assert server.posts == []  # a turn alone waits
    {
        "answered": lambda: sender.answered(1_700_000_000.0),
        "amd": lambda: sender.amd(AmdVerdict(category="machine-vm", reason="beep")),
        "do_not_call": lambda: sender.do_not_call(1_700_000_001.0),
        "final": lambda: sender.final(final_report()),
    }[kind]()
    started = time.monotonic()
    while not server.posts:
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.01)
    assert server.posts == [[0, 1]] and server.reports[1].kind == kind
    await sender.aclose(1)


async def test_a_flush_sends_what_waits_at_once(server: ReportServer) -> None:
    sender = make_sender(server.url, linger_s=60)
    sender.turn(TranscriptTurn(role="callee", text="hello", at_s=1.0))
    started = time.monotonic()
    assert await sender.flush(10)
    assert time.monotonic() - started < 5 and server.posts == [[0]]
    await sender.aclose(1)


async def test_a_report_queued_as_the_close_flushes_is_delivered_too(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An event's callback may queue a report the moment the queue drains, before the close
    goes on: it was neither sent nor named (the close saw its flush succeed)."""
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    idle = sender._idle
    set_idle = idle.set
    late: list[int] = []

    def drained_then_a_report() -> None:
        set_idle()
        if not late:
            late.append(1)
            sender.final(final_report())

    idle.set = drained_then_a_report  # type: ignore[method-assign]
    await sender.aclose(10)
    assert sender.delivered == [0, 1] and sender.dropped == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_close_during_a_split_batch_names_only_what_was_not_delivered(
    server: ReportServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch's reports went again one by one and the close came during the last: the
    ones the server had taken were counted dropped and logged "not delivered" too."""
    server.refuse = {1: 400}
    server.hold = {2: asyncio.Event()}
    sender = make_sender(server.url)
    sender.answered(1_700_000_000.0)
    sender.turn(TranscriptTurn(role="callee", text="one", at_s=1.0))
    sender.final(final_report())
    while [2] not in server.posts and len(server.seen) < 3:  # #0 taken, #1 refused, #2 out
        await asyncio.sleep(0.01)
    await sender.aclose(0.3)
    server.hold[2].set()
    assert (sender.delivered, sender.refused, sender.dropped) == ([0], [1], [2])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "final report #2 not delivered" in errors[0]


async def test_abandoned_while_lingering_the_sender_ends_quietly(server: ReportServer) -> None:
    """The sandbox stopping abandons its senders: the queue cleared, the task cancelled. A
    cancel can be lost when the linger's wait ends at the same moment (Python 3.11's
    wait_for), and the task went on to take a batch from the empty queue: "Task exception
    was never retrieved ... IndexError: pop from an empty deque" in the server's log."""
    sender = make_sender(server.url, linger_s=60)
    sender.turn(TranscriptTurn(role="callee", text="one", at_s=1.0))
    await asyncio.sleep(0.05)  # lingering
    task = sender._task
    assert task is not None

    class LostCancel:  # the cancel that did not land
        def cancel(self) -> bool:
            return False

    sender._task = LostCancel()  # type: ignore[assignment]
    sender.abandon()
    sender._wake.set()  # the wait ends as the cancel would have come
    await asyncio.wait_for(task, 2.0)  # ends by itself, raising nothing
    assert server.posts == [] and sender.dropped == [0]


async def test_holding_back_sends_nothing_past_a_report_given_up(server: ReportServer) -> None:
    """`hold_back` (the spool's passes): a batch refused 413 goes again one by one, and the
    first of them is given up (the server away again): neither the rest of that batch nor
    what waits after it is sent before it; all of them wait for the next pass."""
    server.script = {0: [413] + [502] * 1000}
    sender = ReportSender(
        server.url,
        CALL,
        KEY,
        SECRET,
        clock=ticking_clock(),
        retry=RetryPolicy(first_delay_s=0.01, max_delay_s=0.02, deadline_s=0.2),
        linger_s=0,
        hold_back=True,
    )
    count = MAX_REPORTS_PER_POST + 6
    for n in range(count - 1):
        sender.turn(TranscriptTurn(role="callee", text=f"line {n}", at_s=float(n)))
    sender.final(final_report())
    await sender.aclose(10)
    assert {seq for post in server.posts for seq in post[:1]} == {0}
    assert server.posts[0] == list(range(MAX_REPORTS_PER_POST))
    assert sorted(sender.dropped) == list(range(count)) and sender.delivered == []
