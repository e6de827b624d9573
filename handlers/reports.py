"""`POST /agent/reports`: what an agent reports about its own call, signed like LiveKit's
webhooks (common/signing.py) with a room grant naming the call.

The body is one report, or a JSON array of up to MAX_REPORTS_PER_POST reports of the call,
applied in order in one transaction (the agent sends what queued meanwhile in one POST).
401 when the signature does not hold (nothing changes); 409 when the token covers another
call than a report names, or for a single turn beyond the MAX_TURNS a call keeps (in an array,
that turn's result is `too_many_turns` and the others count); 404 for a call the server does
not know; a report seen before (same call and sequence number) changes nothing again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal, TypeVar

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from common.calls.errors import TooManyTurns, UnknownCall
from common.calls.models import Applied
from common.calls.request import field_errors
from common.contracts import (
    MAX_REPORT_BYTES,
    MAX_REPORTS_PER_POST,
    MAX_TURNS,
    REPORT_BATCH,
    REPORTS_PATH,
    AgentReport,
)
from common.livekit.skew import SignerClocks, signer_behind
from common.masking import redact_cut
from common.signing import REPORT_CLOCK_AHEAD, REPORT_MAX_AHEAD, BodyVerifier, Unverified
from common.storage.base import DatabaseError
from common.text import quoted
from handlers.errors import HttpError, json_error
from handlers.http import (
    PUBLIC_SECRET,
    Reply,
    RouteDoc,
    add_route,
    counted_if_unread,
    decode_json,
    json_answer,
    read_checked_body,
    refuse_unreadable_body,
    signed_by_whom_it_may_be,
)
from handlers.keys import CALLS, METRICS, REFUSALS, REPORTS_REFUSED, SETTINGS
from handlers.schemas import ReportAnswer, ReportResult, ReportsAnswer

logger = logging.getLogger(__name__)

VERIFIER = web.AppKey("report_verifier", BodyVerifier)
# The agents' tokens' signing times against their arrival, for each agent host (a token's
# signer): a report late on its way is no agent clock behind (common/livekit/skew.signer_behind).
AGENT_CLOCKS = web.AppKey("agent_clocks", SignerClocks)
T = TypeVar("T")
BODY = "report body"


async def agent_report(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    signed_by_whom_it_may_be(request)
    with counted_if_unread(metrics.reports):
        refuse_unreadable_body(request, MAX_REPORT_BYTES, BODY)
    # The token before the body, as for LiveKit's webhooks: a forged post's 1 MiB is not read.
    verifier = request.app[VERIFIER]
    token = _verified(
        request, lambda: verifier.verify_token(request.headers.get("Authorization", ""))
    )
    arrived = request.app[CALLS].clock()
    with counted_if_unread(metrics.reports):
        body = await read_checked_body(request, MAX_REPORT_BYTES, BODY)
    signed = _verified(request, lambda: token.covers(body))
    agent_clock = request.app[AGENT_CLOCKS].of(token.signer)
    agent_clock.heard(token.signed_at, arrived)
    try:
        doc = decode_json(body)
    except HttpError:  # signed, not JSON (or not UTF-8): as malformed as a JSON non-report
        metrics.reports.labels(result="malformed").inc()
        raise
    batch = isinstance(doc, list)
    try:
        reports = REPORT_BATCH.validate_python(doc) if batch else [AgentReport.model_validate(doc)]
    except ValidationError as exc:
        metrics.reports.labels(result="malformed").inc()
        details = [e.to_json() for e in field_errors(exc)]
        return json_error(
            400, "not a list of agent reports" if batch else "not an agent report", details
        )
    covered = signed.room
    stray = next((r.call_id for r in reports if r.call_id != covered), None)
    if stray is not None:
        metrics.reports.labels(result="other_call").inc(len(reports))  # the batch refused
        shown = quoted(stray)  # the report's own call id: control characters and all
        # The token's room is a claim of any JSON value (a list of 60 call ids was logged
        # whole, 1.3 KB a line) and the line came once per refused post (a misrouted agent's
        # retries): quoted and cut like the report's call id, said once a minute.
        if (more := request.app[REFUSALS].due("report: other call")) is not None:
            logger.warning(
                "agent report for call %s refused: its token covers %s%s",
                shown,
                quoted(covered),
                more,
            )
        raise HttpError(409, f"the report's token does not cover call {shown}")
    behind = signer_behind(token.signed_at, arrived, agent_clock.behind())
    _say_clock(request, reports, behind)
    try:
        results = await request.app[CALLS].record_reports(reports, behind)
    except (PydanticSerializationError, UnicodeEncodeError, RecursionError) as exc:
        # The contract refuses what cannot be stored; should some value still fail to be
        # written (nothing was: the transaction rolled back), it is the report's, not ours.
        metrics.reports.labels(result="malformed").inc()
        logger.warning(
            "agent report #%s for call %s could not be stored: %s: %s",
            ",".join(str(r.seq) for r in reports),
            reports[0].call_id,
            type(exc).__name__,
            redact_cut(str(exc), 200),
        )
        details = [{"field": "body", "error": "cannot be stored (it is not plain JSON text)"}]
        return json_error(400, "not an agent report", details)
    except UnknownCall as exc:  # answered 404 by handlers/errors.py; counted like the others
        metrics.reports.labels(result="unknown_call").inc(len(reports))
        # Signed with our keys, about a call this database never had: an agent reporting to
        # the wrong server (PUBLIC_BASE_URL), or a database replaced under a live call.
        if (more := request.app[REFUSALS].due("report: unknown call")) is not None:
            logger.warning(
                "agent report for call %s refused (404): no such call in this server's"
                " database (does the agent's report URL, PUBLIC_BASE_URL, lead to the server"
                " that placed it?)%s",
                quoted(exc.call_id),
                more,
                extra={"call_id": exc.call_id},
            )
        raise
    except DatabaseError:  # answered 503 by handlers/errors.py; counted as webhooks' are
        # A database outage refused every report (the transcripts, the verdicts) unseen
        # here, while webhooks_total said each webhook it refused (db_error).
        metrics.reports.labels(result="db_error").inc(len(reports))
        request.app[REPORTS_REFUSED].note(r.call_id for r in reports)
        raise
    outcomes = [_outcome(applied) for applied in results]
    for outcome in outcomes:
        metrics.reports.labels(result=outcome).inc()
    if batch:
        answers = [
            ReportResult(seq=r.seq, result=o, error=_why(r, o))
            for r, o in zip(reports, outcomes, strict=True)
        ]
        return json_answer(ReportsAnswer(results=answers))
    if results[0].too_many_turns:
        raise TooManyTurns(reports[0].call_id, MAX_TURNS)  # answered 409 by handlers/errors.py
    return json_answer(ReportAnswer(result="duplicate" if results[0].duplicate else "applied"))


def _say_clock(request: web.Request, reports: list[AgentReport], behind: float) -> None:
    """Say (once a minute) that the reports' `at` (the agent's clock) are read on this
    server's, `behind` later (record_reports does): an agent host whose clock was 2 minutes
    behind dated each answer at its call's placing (ring_s 0, the ringing counted as talk).
    Each attempt is signed afresh, so its token's `nbf` is the agent's clock as it sent it."""
    if not behind:
        return
    if (more := request.app[REFUSALS].due("report: agent clock")) is not None:
        logger.warning(
            "agent report for call %s: the agent's clock is %.0f s %s this server's (by when"
            " it signed it); its times are read on this server's clock: keep the agent"
            " host's clock in sync (NTP)%s",
            quoted(reports[0].call_id),
            abs(behind),
            "behind" if behind > 0 else "ahead of",
            more,
            extra={"call_id": reports[0].call_id},
        )


def _verified(request: web.Request, check: Callable[[], T]) -> T:
    """`check()`'s verdict on the signature; 401 (counted, and said once a minute per kind of
    refusal) when it does not hold."""
    try:
        return check()
    except Unverified as exc:
        request.app[METRICS].reports.labels(result="unverified").inc()
        if (more := request.app[REFUSALS].due(f"report: {exc.kind}")) is not None:
            logger.warning("agent report refused from %s: %s%s", request.remote, exc, more)
        raise HttpError(401, "report signature did not verify") from None


def _why(report: AgentReport, outcome: str) -> str | None:
    """The reason a report of a batch was not kept (what a lone one's 409 says)."""
    return str(TooManyTurns(report.call_id, MAX_TURNS)) if outcome == "too_many_turns" else None


def _outcome(applied: Applied) -> Literal["applied", "duplicate", "too_many_turns"]:
    if applied.too_many_turns:
        return "too_many_turns"
    return "duplicate" if applied.duplicate else "applied"


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[AGENT_CLOCKS] = SignerClocks()  # _say_clock says it, once a minute
    app[VERIFIER] = BodyVerifier(
        settings.livekit_api_key,
        settings.livekit_api_secret,
        max_ahead=REPORT_MAX_AHEAD,
        not_before_leeway=REPORT_CLOCK_AHEAD,
    )
    add_route(
        app,
        RouteDoc(
            "POST",
            REPORTS_PATH,
            "agentReport",
            "An agent's report about its own call, or several in order (signed like LiveKit"
            " webhooks)",
            body=AgentReport,
            batch_of=MAX_REPORTS_PER_POST,
            log_success=False,
            replies={
                200: Reply(
                    "Stored (or seen before); for several reports, what became of each",
                    ReportAnswer,
                    or_model=ReportsAnswer,
                ),
                400: Reply("Signed, but not an agent report; `details` says why"),
                401: Reply("The signature did not verify; nothing changed"),
                403: PUBLIC_SECRET,
                404: Reply("No such call"),
                409: Reply(
                    "The token covers another call, or the call already holds"
                    f" {MAX_TURNS:,} transcript turns (a turn beyond them is not kept)"
                ),
                413: Reply("The body is larger than 1 MiB"),
                503: Reply(
                    "The calls database is unavailable; the agent retries",
                    headers=("Retry-After",),
                ),
            },
        ),
        agent_report,
    )
