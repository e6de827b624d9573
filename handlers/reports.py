"""`POST /agent/reports`: what an agent reports about its own call, signed like LiveKit's
webhooks (common/signing.py) with a room grant naming the call.

401 when the signature does not hold (nothing changes); 409 when the token covers another
call than the report names, or for a turn beyond the MAX_TURNS a call keeps; 404 for a call
the server does not know; a report seen before (same call and sequence number) changes
nothing again.
"""

from __future__ import annotations

import logging
from typing import Literal

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from common.calls.errors import TooManyTurns
from common.calls.request import field_errors
from common.contracts import MAX_REPORT_BYTES, MAX_TURNS, REPORTS_PATH, AgentReport
from common.signing import BodyVerifier, Unverified
from handlers.errors import HttpError, json_error
from handlers.http import (
    PUBLIC_SECRET,
    Reply,
    RouteDoc,
    add_route,
    decode_json,
    json_answer,
    read_body,
    signed_by_whom_it_may_be,
)
from handlers.keys import CALLS, METRICS, SETTINGS
from handlers.schemas import ReportAnswer

logger = logging.getLogger(__name__)

VERIFIER = web.AppKey("report_verifier", BodyVerifier)


async def agent_report(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    signed_by_whom_it_may_be(request)
    body = await read_body(request, MAX_REPORT_BYTES, "report body")
    try:
        signed = request.app[VERIFIER].verify(request.headers.get("Authorization", ""), body)
    except Unverified as exc:
        metrics.reports.labels(result="unverified").inc()
        logger.warning("agent report refused from %s: %s", request.remote, exc)
        raise HttpError(401, "report signature did not verify") from None
    try:
        report = AgentReport.model_validate(decode_json(body))
    except ValidationError as exc:
        metrics.reports.labels(result="malformed").inc()
        details = [e.to_json() for e in field_errors(exc)]
        return json_error(400, "not an agent report", details)
    covered = signed.room
    if covered != report.call_id:
        metrics.reports.labels(result="other_call").inc()
        logger.warning(
            "agent report for call %s refused: its token covers %s", report.call_id, covered
        )
        raise HttpError(409, f"the report's token does not cover call {report.call_id}")
    try:
        applied = await request.app[CALLS].record_report(report)
    except TooManyTurns:  # answered 409 by handlers/errors.py
        metrics.reports.labels(result="too_many_turns").inc()
        raise
    except (PydanticSerializationError, UnicodeEncodeError, RecursionError) as exc:
        # The contract refuses what cannot be stored; should some value still fail to be
        # written (nothing was: the transaction rolled back), it is the report's, not ours.
        metrics.reports.labels(result="malformed").inc()
        logger.warning(
            "agent report #%d for call %s could not be stored: %s: %s",
            report.seq,
            report.call_id,
            type(exc).__name__,
            str(exc)[:200],
        )
        details = [{"field": "body", "error": "cannot be stored (it is not plain JSON text)"}]
        return json_error(400, "not an agent report", details)
    result: Literal["applied", "duplicate"] = "duplicate" if applied.duplicate else "applied"
    metrics.reports.labels(result=result).inc()
    return json_answer(ReportAnswer(result=result))


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[VERIFIER] = BodyVerifier(settings.livekit_api_key, settings.livekit_api_secret)
    add_route(
        app,
        RouteDoc(
            "POST",
            REPORTS_PATH,
            "agentReport",
            "An agent's report about its own call (signed like LiveKit webhooks)",
            body=AgentReport,
            log_success=False,
            replies={
                200: Reply("Stored (or seen before)", ReportAnswer),
                400: Reply("Signed, but not an agent report; `details` says why"),
                401: Reply("The signature did not verify; nothing changed"),
                403: PUBLIC_SECRET,
                404: Reply("No such call"),
                409: Reply(
                    "The token covers another call, or the call already holds"
                    f" {MAX_TURNS:,} transcript turns (a turn beyond them is not kept)"
                ),
                413: Reply("The body is larger than 1 MiB"),
                503: Reply("The calls database is unavailable; the agent retries"),
            },
        ),
        agent_report,
    )
