"""`POST /webhooks/livekit`: LiveKit's signed room events, verified, deduplicated, applied.

Verification is LiveKit's scheme: the `Authorization` header (with or without `Bearer `) is a
JWT signed with our API secret, issued by our API key, whose `sha256` claim is the base64
SHA-256 of the exact body bytes. Anything that does not verify gets 401 and changes nothing.
A well-signed event never gets a 5xx, except 503 when the database is down, so LiveKit retries.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Literal, TypeVar

from aiohttp import web

from common.livekit.events import MalformedEvent, RoomEvent
from common.livekit.skew import LiveKitClock
from common.masking import redact_cut
from common.signing import WEBHOOK_MAX_AHEAD, BodyVerifier, Unverified
from common.storage.base import DatabaseError
from handlers.errors import HttpError
from handlers.http import (
    PUBLIC_SECRET,
    Reply,
    RouteDoc,
    add_route,
    counted_if_unread,
    json_answer,
    read_checked_body,
    refuse_unreadable_body,
    signed_by_whom_it_may_be,
)
from handlers.keys import CALLS, METRICS, REFUSALS, SETTINGS
from handlers.schemas import WebhookAnswer

logger = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024
# The 503 of a webhook the database could not take asks LiveKit to wait this long between its
# attempts. LiveKit's notifier (livekit/protocol webhook/resource_url_notifier.go) makes 5
# attempts through go-retryablehttp, whose DefaultBackoff (v0.7.8) waits a 503's Retry-After
# instead of its own 1, 2, 4 and 8 s, then drops the event: the 2 s other 503s ask for gave
# up after 8 s of a database outage (a PostgreSQL restart), half what LiveKit's own back-off
# allows, and a callee's hang-up so lost left the call to the reaper (its busy line read
# no_answer). 5 s makes 20 s; longer, the room's next events, queued behind it, would pass
# the 30 s LiveKit keeps a queued webhook (its MaxAge) and be dropped in turn.
LIVEKIT_RETRY_AFTER_S = 5
Result = Literal["applied", "duplicate", "ignored"]
VERIFIER = web.AppKey("webhook_verifier", BodyVerifier)
LIVEKIT_CLOCK = web.AppKey("livekit_clock", LiveKitClock)
T = TypeVar("T")
BODY = "webhook body"


async def livekit_webhook(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    signed_by_whom_it_may_be(request)
    with counted_if_unread(metrics.webhooks):
        refuse_unreadable_body(request, MAX_WEBHOOK_BYTES, BODY)
    # The token before the body: anyone may post here, and 1,000 forged posts of 1 MiB each,
    # read before their token was looked at, took the server to 1 GB for good.
    verifier = request.app[VERIFIER]
    token = _verified(request, lambda: verifier.verify_token(_authorization(request)))
    with counted_if_unread(metrics.webhooks):
        body = await read_checked_body(request, MAX_WEBHOOK_BYTES, BODY)
    _verified(request, lambda: token.covers(body))
    heard_at = request.app[CALLS].webhook_heard_at = request.app[CALLS].clock()
    livekit_clock = request.app[LIVEKIT_CLOCK]
    livekit_clock.heard(token.signed_at, heard_at)
    try:
        event = RoomEvent.from_json(body)
    except MalformedEvent as exc:
        metrics.webhooks.labels(result="malformed").inc()
        if (more := request.app[REFUSALS].due("webhook: malformed")) is not None:
            logger.warning(
                "signed webhook is not a LiveKit event: %s%s", redact_cut(str(exc), 200), more
            )
        raise HttpError(400, "webhook body is not a LiveKit event") from None
    # Its time on this server's clock: LiveKit's, minutes behind, dated every hang-up early.
    # (A copy of the event only when that moves it: on every webhook, the clocks agree.)
    dated = livekit_clock.on_our_clock(event.created_at)
    if dated != event.created_at:
        event = dataclasses.replace(event, created_at=dated)
    try:
        applied = await request.app[CALLS].handle_event(event)
    except DatabaseError:
        metrics.webhooks.labels(result="db_error").inc()
        raise HttpError(
            503, "calls database unavailable; retry", {"Retry-After": str(LIVEKIT_RETRY_AFTER_S)}
        ) from None
    except OSError as exc:  # config record removal is best effort; never 5xx for it
        logger.error("webhook %s: %s", event.id, exc)
        applied = None
    result: Result = (
        "ignored" if applied is None else "duplicate" if applied.duplicate else "applied"
    )
    metrics.webhooks.labels(result=result).inc()
    return json_answer(WebhookAnswer(result=result))


def _authorization(request: web.Request) -> str:
    return request.headers.get("Authorization", "")


def _verified(request: web.Request, check: Callable[[], T]) -> T:
    """`check()`'s verdict on the signature; 401 (counted, and said once a minute per kind of
    refusal) when it does not hold."""
    try:
        return check()
    except Unverified as exc:
        metrics = request.app[METRICS]
        metrics.webhook_verification_failures.inc()
        metrics.webhooks.labels(result="unverified").inc()
        if (more := request.app[REFUSALS].due(f"webhook: {exc.kind}")) is not None:
            logger.warning("webhook refused from %s: %s%s", request.remote, exc, more)
        raise HttpError(401, "webhook signature did not verify") from None


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[VERIFIER] = BodyVerifier(
        settings.livekit_api_key, settings.livekit_api_secret, max_ahead=WEBHOOK_MAX_AHEAD
    )
    app[LIVEKIT_CLOCK] = LiveKitClock()
    add_route(
        app,
        RouteDoc(
            "POST",
            settings.webhook_path,
            "livekitWebhook",
            "LiveKit's signed webhooks (Authorization: a JWT over the body)",
            body_content_type="application/webhook+json",
            log_success=False,
            replies={
                200: Reply("Accepted", WebhookAnswer),
                400: Reply("Signed, but not a LiveKit event"),
                401: Reply("The signature did not verify; nothing changed"),
                403: PUBLIC_SECRET,
                413: Reply("The body is larger than 1 MiB"),
                503: Reply(
                    "The calls database is unavailable; LiveKit retries", headers=("Retry-After",)
                ),
            },
        ),
        livekit_webhook,
        # LiveKit posts to the URL its project was given, as the operator typed it: with a
        # trailing slash (or without the one WEBHOOK_PATH has), every webhook was a 404.
        also_at=other_spelling(settings.webhook_path),
    )


def other_spelling(path: str) -> str | None:
    """The path with its trailing slash if it has none, without it if it has one."""
    if path == "/":
        return None
    return path[:-1] if path.endswith("/") else path + "/"
