"""`/calls` routes: place a call (the seed's endpoint), list, show and hang up calls."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from common.call_flow import HangupResult, TooManyLiveCalls
from common.call_request import InvalidCall, parse_outbound_call
from common.calls_db import DatabaseError
from common.livekit_calls import LiveKitError
from common.outcomes import Status
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
        return await _outbound_call(request, raw)
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        return json_error(
            400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        )
    client = client_identity(request)
    scoped = (client, hashlib.sha256(key.encode()).hexdigest())
    request_hash = hashlib.sha256(raw).hexdigest()
    in_flight = request.app[_IN_FLIGHT]
    if scoped in in_flight:  # the same request is being placed right now: share its answer
        first_hash, first = in_flight[scoped]
        if first_hash != request_hash:
            return _key_reused()
        return _clone(await asyncio.shield(first))
    future: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()
    in_flight[scoped] = (request_hash, future)  # before any await: a duplicate waits for us
    try:
        response = await _idempotent_call(request, raw, scoped, request_hash)
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
    request: web.Request, raw: bytes, scoped: tuple[str, str], request_hash: str
) -> web.Response:
    """Replay the stored answer for this key, or place the call and store its answer."""
    db = request.app[DB]
    try:
        stored = await db.get_idempotent(*scoped)
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    if stored is not None:
        if stored.request_hash and stored.request_hash != request_hash:
            return _key_reused()
        return web.json_response(
            stored.body, status=stored.status, headers={"Idempotent-Replay": "1"}
        )
    response = await _outbound_call(request, raw)
    if response.status == 200 and isinstance(response.body, bytes):
        body = json.loads(response.body)
        try:
            await db.put_idempotent(*scoped, 200, body, request_hash)
        except DatabaseError:
            logger.error("could not store the idempotent answer for call %s", body["call_id"])
    return response


def _clone(response: web.Response) -> web.Response:
    body = response.body if isinstance(response.body, bytes) else b""
    return web.Response(
        body=body,
        status=response.status,
        content_type=response.content_type,
        headers={"Idempotent-Replay": "1"},
    )


async def _outbound_call(request: web.Request, raw: bytes) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return json_error(400, f"request body is not valid JSON: {exc}")
    except RecursionError:  # e.g. 30,000 nested "[" fit in 64 KiB
        return json_error(400, "request body is not valid JSON: nested too deeply")
    try:
        call = parse_outbound_call(body, settings.calls_allowed_countries)
    except InvalidCall as exc:
        return json_error(422, "invalid request", [e.to_json() for e in exc.errors])

    limiter = request.app[LIMITER]
    client = client_identity(request)
    retry_after = limiter.retry_after(client)
    if retry_after:
        return json_error(
            429,
            f"rate limit: at most {limiter.per_minute} calls per minute",
            headers={"Retry-After": str(retry_after)},
        )
    limiter.record(client)
    try:
        placed = await request.app[CALLS].place(call)
    except TooManyLiveCalls as exc:
        limiter.forget_last(client)  # refused calls do not count against the rate
        return json_error(429, str(exc), headers={"Retry-After": str(LIVE_CAP_RETRY_AFTER_S)})
    except ConfigWriteError as exc:
        return json_error(503, f"could not store the call's configuration: {exc.strerror}")
    except DatabaseError:
        return json_error(503, "calls database unavailable")
    except LiveKitError as exc:
        return json_error(exc.http_status, f"LiveKit did not place the call: {exc.reason}")
    return web.json_response(
        {
            "status": "success",
            "call_id": placed.call_id,
            "room": placed.call_id,
            "call_status": placed.status.value,
        }
    )


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
            raise ValueError("before must be a unix timestamp") from None
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
