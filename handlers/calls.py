"""`/calls` routes: place a call (the seed's endpoint), list, show and hang up calls."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
from typing import Any

from aiohttp import web

from common.call_flow import HangupResult, KeyAlreadyUsed, TooManyLiveCalls
from common.call_request import InvalidCall, parse_outbound_call
from common.calls_db import CallsDB, DatabaseError, IdempotencyClaim, StoredAnswer
from common.livekit_calls import LiveKitError
from common.outcomes import Status
from common.ratelimit import RateLimiter
from common.update_config import ConfigWriteError
from handlers.context import CALLS, DB, LIMITER, SETTINGS, BodyTooLarge, json_error, read_body

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 200
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 500
LIVE_CAP_RETRY_AFTER_S = 5
InFlight = dict[tuple[str, str], tuple[str, asyncio.Future[web.Response]]]
_IN_FLIGHT = web.AppKey("idempotent_in_flight", InFlight)


def client_identity(request: web.Request) -> str:
    """Who the limits apply to: the API token's holder, else the client address."""
    if request.app[SETTINGS].calls_api_token:
        return "token"
    return request.remote or "unknown"


@web.middleware
async def require_token(request: web.Request, handler: Any) -> web.StreamResponse:
    """With CALLS_API_TOKEN set, every /calls request needs it (constant-time compare)."""
    token = request.app[SETTINGS].calls_api_token
    if token and request.path.startswith("/calls"):
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
        if not ok:
            return json_error(
                401,
                "missing or invalid API token",
                headers={"WWW-Authenticate": 'Bearer realm="calls"'},
            )
    response: web.StreamResponse = await handler(request)
    return response


async def outbound_call(request: web.Request) -> web.Response:
    """POST /calls/outbound: the seed's request body; 200 {"status": "success", ...}."""
    try:
        raw = await read_body(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        return json_error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return await _outbound_call(request, raw, None)
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        return json_error(
            400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    claim = IdempotencyClaim(
        client_identity(request),
        hashlib.sha256(key.encode()).hexdigest(),
        hashlib.sha256(raw).hexdigest(),
    )
    scoped = (claim.client, claim.key)
    in_flight = request.app[_IN_FLIGHT]
    if scoped in in_flight:  # the same request is being placed right now: share its answer
        first_hash, first = in_flight[scoped]
        if first_hash != claim.request_hash:
            return _key_reused()
        return _clone(await asyncio.shield(first))
    future: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()
    in_flight[scoped] = (claim.request_hash, future)  # before any await: a duplicate waits
    try:
        response = await _idempotent_call(request, raw, claim)
        future.set_result(response)
        return response
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # mark retrieved: a lone request need not leave a warning behind
        raise
    finally:
        del in_flight[scoped]


def _key_reused() -> web.Response:
    return json_error(
        409, "Idempotency-Key was already used with a different request body; use a new key"
    )


async def _idempotent_call(
    request: web.Request, raw: bytes, claim: IdempotencyClaim
) -> web.Response:
    """Answer what this key is bound to, or place the call with the key recorded on its row.

    The key is stored with the call before anything is dialled, so a retry after a crash gets
    that call (never a second one); the answer is stored once given, and replayed.
    """
    try:
        stored = await request.app[DB].get_idempotent(claim.client, claim.key)
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    if stored is not None:
        return await _bound_answer(request, stored, claim)
    return await _outbound_call(request, raw, claim)


async def _bound_answer(
    request: web.Request, stored: StoredAnswer, claim: IdempotencyClaim
) -> web.Response:
    """The answer for a key that is bound to a call already."""
    if stored.request_hash != claim.request_hash:
        return _key_reused()
    replay = {"Idempotent-Replay": "1"}
    if stored.status is not None and stored.body is not None:
        return web.json_response(stored.body, status=stored.status, headers=replay)
    # Placed (or being placed) but never answered, e.g. the server died mid-placement.
    try:
        call = await request.app[DB].get_call(stored.call_id, with_timeline=False)
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    status = call.status if call is not None else Status.DIALING
    return web.json_response(_placed_body(stored.call_id, status), headers=replay)


def _placed_body(call_id: str, status: Status) -> dict[str, Any]:
    return {"status": "success", "call_id": call_id, "room": call_id, "call_status": status.value}


def _clone(response: web.Response) -> web.Response:
    body = response.body if isinstance(response.body, bytes) else b""
    return web.Response(
        body=body,
        status=response.status,
        content_type=response.content_type,
        headers={"Idempotent-Replay": "1"},
    )


def decode_json(raw: bytes) -> object:
    """The request's JSON, read as UTF-8 only; ValueError with a message for the client.

    `json.loads` would also take UTF-16 and UTF-32 bytes; RFC 8259 bodies are UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"request body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text.removeprefix("\ufeff"))
    except ValueError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 30,000 nested "[" fit in 64 KiB
        raise ValueError("request body is not valid JSON: nested too deeply") from None


class _RateSlot:
    """The client's share of CALLS_RATE_LIMIT_PER_MIN, as CallService.place takes it."""

    def __init__(self, limiter: RateLimiter, client: str) -> None:
        self._limiter = limiter
        self._client = client

    def take(self) -> None:
        retry_after = self._limiter.retry_after(self._client)
        if retry_after:
            raise RateLimited(self._limiter.per_minute, retry_after)
        self._limiter.record(self._client)

    def give_back(self) -> None:
        self._limiter.forget_last(self._client)


class RateLimited(Exception):
    def __init__(self, per_minute: int, retry_after: int) -> None:
        super().__init__(f"rate limit: at most {per_minute} calls per minute")
        self.retry_after = retry_after


async def _outbound_call(
    request: web.Request, raw: bytes, claim: IdempotencyClaim | None
) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        body = decode_json(raw)
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        call = parse_outbound_call(
            body, settings.calls_allowed_countries, strict_numbers=not settings.uses_sandbox
        )
    except InvalidCall as exc:
        return json_error(422, "invalid request", [e.to_json() for e in exc.errors])
    rate = _RateSlot(request.app[LIMITER], client_identity(request))
    db = request.app[DB]
    try:
        placed = await request.app[CALLS].place(call, claim=claim, rate=rate)
    except TooManyLiveCalls as exc:
        return json_error(429, str(exc), headers={"Retry-After": str(LIVE_CAP_RETRY_AFTER_S)})
    except RateLimited as exc:
        return json_error(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    except KeyAlreadyUsed as exc:  # another server took this key while we were writing
        assert claim is not None  # noqa: S101 - only a claim can be taken
        return await _bound_answer(request, exc.stored, claim)
    except ConfigWriteError as exc:
        return json_error(503, f"could not store the call's configuration: {exc.strerror}")
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    except LiveKitError as exc:
        response = json_error(exc.http_status, f"LiveKit did not place the call: {exc.reason}")
        if claim is not None and exc.maybe_done:  # the key stays bound: replay, never redial
            await _store_answer(db, claim, response)
        return response
    response = web.json_response(_placed_body(placed.call_id, placed.status))
    if claim is not None:
        await _store_answer(db, claim, response)
    return response


async def _store_answer(db: CallsDB, claim: IdempotencyClaim, response: web.Response) -> None:
    body = response.body if isinstance(response.body, bytes) else b"{}"
    try:
        await db.answer_idempotent(claim.client, claim.key, response.status, json.loads(body))
    except DatabaseError as exc:  # the key is bound to its call already: retries get it
        logger.error("could not store the answer under an Idempotency-Key: %s", exc)


async def get_call(request: web.Request) -> web.Response:
    try:
        call = await request.app[DB].get_call(request.match_info["call_id"])
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    if call is None:
        return json_error(404, "unknown call")
    return web.json_response(call.to_json())


def _list_params(request: web.Request) -> tuple[Status | None, int, float | None]:
    query = request.query
    status = None
    if query.get("status"):
        try:
            status = Status(query["status"])
        except ValueError:
            raise ValueError(
                f"status must be one of {', '.join(s.value for s in Status)}"
            ) from None
    try:
        limit = int(query.get("limit", LIST_LIMIT_DEFAULT))
    except ValueError:
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise ValueError(f"limit must be between 1 and {LIST_LIMIT_MAX}")
    before = None
    if query.get("before"):
        try:
            before = float(query["before"])
        except ValueError:
            before = math.nan
        if not math.isfinite(before):
            raise ValueError("before must be a unix timestamp (a finite number)")
    return status, limit, before


async def list_calls(request: web.Request) -> web.Response:
    """GET /calls?status=&limit=&before=: newest first."""
    try:
        status, limit, before = _list_params(request)
    except ValueError as exc:
        return json_error(400, str(exc))
    try:
        calls = await request.app[DB].list_calls(status=status, limit=limit, before=before)
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    next_before = calls[-1].created_at if len(calls) == limit else None
    return web.json_response(
        {
            "calls": [c.to_json(with_timeline=False) for c in calls],
            "next_before": next_before,
        }
    )


async def hangup(request: web.Request) -> web.Response:
    """POST /calls/{call_id}/hangup: end a live call; it settles as canceled."""
    call_id = request.match_info["call_id"]
    try:
        result, call = await request.app[CALLS].hangup(call_id)
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    except LiveKitError as exc:
        return json_error(exc.http_status, f"LiveKit did not end the call: {exc.reason}")
    if result is HangupResult.UNKNOWN or call is None:
        return json_error(404, "unknown call")
    if result is HangupResult.ALREADY_FINAL:
        return json_error(409, f"call already ended ({call.status.value})")
    return web.json_response(
        {"status": "success", "call_id": call_id, "call_status": call.status.value}
    )


def setup(app: web.Application) -> None:
    app[_IN_FLIGHT] = {}
    app.router.add_post("/calls/outbound", outbound_call)
    app.router.add_get("/calls", list_calls)
    app.router.add_get("/calls/{call_id}", get_call)
    app.router.add_post("/calls/{call_id}/hangup", hangup)
