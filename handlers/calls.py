"""`/calls` routes: place a call (the seed's endpoint), list, show and hang up calls."""

from __future__ import annotations

import json

from aiohttp import web

from common.calls.admission import Placement
from common.calls.errors import FieldError, InvalidCall, request_object
from common.calls.models import Erasure, IdempotencyClaim, StoredAnswer
from common.calls.outcomes import Status
from common.calls.phone import e164, well_formed_e164
from common.calls.request import OutboundCall, RequestRules
from common.calls.views import CallSummary, CallView
from common.livekit.client import LiveKitError
from common.storage.paging import Before
from common.times import iso_time
from handlers.errors import RETRY_S, HttpError, error_response
from handlers.http import (
    BEFORE_PARAM,
    DB_DOWN,
    UNAUTHORIZED,
    PageLimit,
    Reply,
    RouteDoc,
    add_route,
    before_param,
    client_identity,
    decode_json_object,
    expect_continue,
    idempotency_key,
    idempotency_param,
    json_answer,
    page_of,
    read_body,
)
from handlers.keys import CALLS, SETTINGS, STORE
from handlers.schemas import CallList, CallPlaced, Erased, EraseNumberBody, HangupAnswer

MAX_BODY_BYTES = 64 * 1024
LIST_LIMIT = PageLimit(default=50, maximum=500)
REPLAY = {"Idempotent-Replay": "1"}
REPLAYED = tuple(REPLAY)  # documented on the answers a retry under a key may get again
ERASURE_HELD_UP = Reply(
    "The calls database is unavailable, or what a call was placed with could not be removed"
    " from config.json (its top level, a call's record, a copy set aside that may hold it;"
    " those calls not erased; the error says so, and what was erased): send the same request"
    " again",
    headers=("Retry-After",),
)


def placement_of(request: web.Request, document: object, raw: bytes) -> Placement:
    """Who asks, and the Idempotency-Key they send (with the request it covers: its JSON
    `document`, whose bytes were `raw`)."""
    client = client_identity(request)
    key = idempotency_key(request)
    if key is None:
        return Placement(client)
    return Placement(client, IdempotencyClaim.of(client, key, document, raw))


async def outbound_call(request: web.Request) -> web.Response:
    """POST /calls/outbound: the seed's request body; 200 {"status": "success", ...}."""
    raw = await read_body(request, MAX_BODY_BYTES)
    document = decode_json_object(request, raw)
    call = RequestRules.of(request.app[SETTINGS]).parse(document)
    placement = placement_of(request, document, raw)
    calls = request.app[CALLS]
    try:
        placed = await calls.place(call, placement)
    except LiveKitError as exc:
        failure = error_response(exc)
        assert failure is not None  # noqa: S101 - the error table answers every LiveKitError
        if exc.may_have_rung and exc.call_id and isinstance(failure.body, bytes):  # key bound:
            await calls.remember(placement, exc.call_id, failure.status, _json(failure.body))
        return failure
    if placed.bound is not None:
        return await _bound_answer(request, placed.bound)
    assert placed.call is not None  # noqa: S101 - place returns one of the two
    answer = CallPlaced(
        call_id=placed.call.call_id, room=placed.call.call_id, call_status=placed.call.status
    )
    await calls.remember(placement, placed.call.call_id, 200, answer.model_dump(mode="json"))
    return json_answer(answer)


def _json(body: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(body)
    return doc


async def _bound_answer(request: web.Request, stored: StoredAnswer) -> web.Response:
    """A retry under a key bound to a call: the answer given then, or the call as it is now."""
    if stored.status == 200 and stored.body is not None:  # the very bytes of the first 200
        return json_answer(CallPlaced.model_validate(stored.body), headers=REPLAY)
    if stored.status is not None and stored.body is not None:  # an error, as json_error wrote it
        return web.json_response(stored.body, status=stored.status, headers=REPLAY)
    # Placed (or being placed) but never answered, e.g. the server died mid-placement.
    call = await request.app[STORE].get_call(stored.call_id, with_timeline=False)
    if call is not None and call.status is Status.DIALING and call.dial_started_at is None:
        # Not dialled yet: a 200 "dialing" said so of calls whose server then stopped, and
        # nobody was ever called. 409 while the request is outstanding (as the IETF's
        # Idempotency-Key draft says); later, its answer, or a new placement once the reaper
        # has settled a call its server left undialled (PLACEMENT_BOUND_S).
        raise HttpError(
            409,
            "the request under this Idempotency-Key is still being placed (nothing dialled"
            " yet); retry shortly for its answer (a call its placing left undialled is"
            " settled failed within about a minute and a half, and the key freed)",
            {"Retry-After": str(RETRY_S)},
        )
    status = call.status if call is not None else Status.DIALING
    answer = CallPlaced(call_id=stored.call_id, room=stored.call_id, call_status=status)
    return json_answer(answer, headers=REPLAY)


async def get_call(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    call = await calls.get(request.match_info["call_id"])
    # Written by pydantic-core: a call of 2,000 long turns is tens of MB, which json.dumps
    # built on the event loop 3-5x slower (and \u-escaped: 3x the bytes of accented text).
    return json_answer(CallView.of(call, calls.clock()))


def _list_params(request: web.Request) -> tuple[Status | None, int, Before | None]:
    query = request.query
    status = None
    if query.get("status"):
        try:
            status = Status(query["status"])
        except ValueError:
            raise HttpError(
                400, f"status must be one of {', '.join(s.value for s in Status)}"
            ) from None
    return status, LIST_LIMIT.of(request), before_param(request)


async def list_calls(request: web.Request) -> web.Response:
    """GET /calls?status=&limit=&before=: newest first."""
    status, limit, before = _list_params(request)
    found = await request.app[STORE].list_calls(status=status, limit=limit + 1, before=before)
    calls, last = page_of(found, limit)
    next_before = Before.after(last.created_at, last.call_id).token if last else None
    return json_answer(CallList(calls=[CallSummary.of(c) for c in calls], next_before=next_before))


async def hangup(request: web.Request) -> web.Response:
    """POST /calls/{call_id}/hangup: end a live call; it settles as canceled."""
    call = await request.app[CALLS].hangup(request.match_info["call_id"])
    return json_answer(HangupAnswer(call_id=call.call_id, call_status=call.status))


async def erase_call(request: web.Request) -> web.Response:
    """POST /calls/{call_id}/erase: erase the call's personal data now."""
    return json_answer(_erased(await request.app[CALLS].erase(request.match_info["call_id"])))


ERASE_BODY_BYTES = 4 * 1024


async def erase_number(request: web.Request) -> web.Response:
    """POST /calls/erase {"phone_number"}: erase the personal data of every call to it now."""
    raw_doc = decode_json_object(request, await read_body(request, ERASE_BODY_BYTES))
    doc = request_object(raw_doc, ("phone_number",), '{"phone_number": ...}')
    raw = doc.get("phone_number")
    try:
        number = e164(raw)
    except ValueError as exc:
        # Well formed but no country's (the sandbox takes made-up numbers): as written. Not
        # a spreadsheet's decimal: "+4930123456.0" erased the calls to +49301234560, another
        # person's, its dot read as a separator.
        written = well_formed_e164(raw) if isinstance(raw, str) else None
        if written is None:
            raise InvalidCall([FieldError("phone_number", str(exc))]) from None
        number = written
    return json_answer(_erased(await request.app[CALLS].erase_number(number)))


def _erased(erasure: Erasure) -> Erased:
    return Erased(
        erased=len(erasure.erased),
        call_ids=list(erasure.erased),
        recipients_erased=erasure.recipients,
        personal_data_erased_at=iso_time(erasure.erased_at) if erasure.erased_at else None,
    )


# ----------------------------------------------------------------------------- the routes

CALL_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The call id answered by POST /calls/outbound (also the LiveKit room)",
}


async def _post_only(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def setup(app: web.Application) -> None:
    add_route(
        app,
        RouteDoc(
            "POST",
            "/calls/outbound",
            "placeCall",
            "Place an outbound call with its own configuration",
            body=OutboundCall,
            protected=True,
            parameters=[idempotency_param("a second call")],
            replies={
                200: Reply("The call is dialing", CallPlaced, headers=REPLAYED),
                400: Reply("The body is not UTF-8 JSON, a bad Idempotency-Key, or any query"),
                401: UNAUTHORIZED,
                409: Reply(
                    "The Idempotency-Key was already used with another body; or (with"
                    " Retry-After) its call is recorded but not dialled yet: retry later",
                    headers=("Retry-After",),
                ),
                413: Reply("The body is larger than 64 KiB"),
                422: Reply("The body is invalid; `details` lists every field's problem"),
                429: Reply("Live-call cap or rate limit reached", headers=("Retry-After",)),
                502: Reply(
                    "LiveKit refused the call (the call is recorded as failed; one its dial"
                    " reached the line of, refused with a SIP status, as the status maps: 486"
                    " busy, 480 no_answer)",
                    headers=REPLAYED,
                ),
                503: Reply(
                    "Config store, calls database or LiveKit unavailable",
                    headers=("Retry-After", *REPLAYED),
                ),
                504: Reply(
                    "LiveKit did not answer in time (the call is recorded as failed)",
                    headers=REPLAYED,
                ),
            },
        ),
        outbound_call,
    )
    # Any other method of /calls/outbound: 405 naming POST alone (aiohttp's own 405 named
    # GET and HEAD too, those of /calls/{call_id}, whose pattern the path also matches).
    app.router.add_route("*", "/calls/outbound", _post_only, expect_handler=expect_continue)
    add_route(
        app,
        RouteDoc(
            "POST",
            "/calls/erase",
            "eraseNumber",
            "Erase now the personal data of every call to a phone number",
            body=EraseNumberBody,
            protected=True,
            replies={
                200: Reply("Erased (`erased` 0 when no call went to the number)", Erased),
                400: Reply("The body is not UTF-8 JSON, or any query"),
                401: UNAUTHORIZED,
                409: Reply(
                    "A call to the number is live, or a campaign call to it has just ended"
                    " (Retry-After): nothing was erased; the error names it",
                    headers=("Retry-After",),
                ),
                413: Reply(f"The body is larger than {ERASE_BODY_BYTES} bytes"),
                422: Reply("An unknown field, or `phone_number` not an E.164 number"),
                503: ERASURE_HELD_UP,
            },
        ),
        erase_number,
    )
    # Any other method: 405 naming POST alone (not GET /calls/{call_id}'s 404).
    app.router.add_route("*", "/calls/erase", _post_only, expect_handler=expect_continue)
    add_route(
        app,
        RouteDoc(
            "GET",
            "/calls",
            "listCalls",
            "Recent calls, newest first",
            protected=True,
            parameters=[
                {
                    "name": "status",
                    "in": "query",
                    "required": False,
                    "allowEmptyValue": True,  # status= is no filter
                    "schema": {"enum": [s.value for s in Status]},
                },
                LIST_LIMIT.doc,
                BEFORE_PARAM,
            ],
            replies={
                200: Reply("Calls", CallList),
                400: Reply("A bad query parameter"),
                401: UNAUTHORIZED,
                503: DB_DOWN,
            },
        ),
        list_calls,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/calls/{call_id}",
            "getCall",
            "One call: status, outcome, times, its config and event timeline",
            protected=True,
            parameters=[CALL_ID],
            replies={
                200: Reply("The call", CallView),
                401: UNAUTHORIZED,
                404: Reply("No such call"),
                405: Reply("GET /calls/outbound: that route takes POST (Allow: POST)"),
                503: DB_DOWN,
            },
        ),
        get_call,
    )
    add_route(
        app,
        RouteDoc(
            "POST",
            "/calls/{call_id}/hangup",
            "hangupCall",
            "End a call (also while it is being placed); it settles as canceled",
            protected=True,
            parameters=[CALL_ID],
            replies={
                200: Reply("Hanging up", HangupAnswer),
                401: UNAUTHORIZED,
                404: Reply("No such call"),
                409: Reply(
                    "The call has already ended, or its room is in another server's sandbox"
                ),
                502: Reply("LiveKit refused to end the call"),
                503: Reply("Calls database or LiveKit unavailable", headers=("Retry-After",)),
                504: Reply("LiveKit did not answer in time"),
            },
        ),
        hangup,
    )
    add_route(
        app,
        RouteDoc(
            "POST",
            "/calls/{call_id}/erase",
            "eraseCall",
            "Erase now the call's personal data (what the retention erases, and its name and"
            " instructions)",
            protected=True,
            parameters=[CALL_ID],
            replies={
                200: Reply("Erased", Erased),
                401: UNAUTHORIZED,
                404: Reply("No such call"),
                409: Reply(
                    "The call is live, or a campaign call that has just ended (Retry-After):"
                    " nothing was erased; erase it once it has ended",
                    headers=("Retry-After",),
                ),
                503: ERASURE_HELD_UP,
            },
        ),
        erase_call,
    )
