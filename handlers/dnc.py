"""`/dnc` routes: the do-not-call list. A number on it is refused by POST /calls/outbound
(422) and skipped by campaigns; the agent adds a callee who asks not to be called again."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from common.calls.errors import FieldError, InvalidCall, request_object
from common.calls.phone import (
    DIGITS_SYNTAX,
    PHONE_SYNTAX,
    SEPARATOR,
    compact_e164,
    e164,
    listed_forms,
    well_formed_e164,
    written_e164,
)
from common.calls.views import Timestamp
from common.own_threads import OwnThreads
from handlers.errors import HttpError
from handlers.http import (
    DB_DOWN,
    UNAUTHORIZED,
    PageLimit,
    Reply,
    RouteDoc,
    add_route,
    decode_json_object,
    json_answer,
    page_of,
    read_body,
)
from handlers.keys import CALLS, STORE

MAX_BODY_BYTES = 1024 * 1024
MAX_NUMBERS = 10_000
LIST_LIMIT = PageLimit(default=100, maximum=1000)


# `after`: a number, or one whose "+" a URL's form decoding turned into a leading space.
AFTER_SYNTAX = rf"^(?: {DIGITS_SYNTAX}|(?! ){SEPARATOR}*\+{DIGITS_SYNTAX})?$"
NUMBER = Annotated[str, Field(json_schema_extra={"pattern": PHONE_SYNTAX})]


class DncBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as add_numbers refuses unknown fields

    numbers: list[NUMBER] = Field(min_length=1, max_length=MAX_NUMBERS, description="E.164 numbers")


class DncAdded(BaseModel):
    status: str
    added: int = Field(description="Numbers that were not on the list before")
    numbers: list[str] = Field(description="The numbers, normalized to E.164")
    hung_up: list[str] = Field(
        description="Calls to these numbers that were dialling or ringing, hung up (canceled)"
    )


class DncRemoved(BaseModel):
    status: str
    phone_number: str = Field(description="The number taken off the list, in E.164")


class DncEntryView(BaseModel):
    """A number on the list (DncEntry.to_json)."""

    model_config = ConfigDict(extra="forbid")

    phone_number: str = Field(description="E.164")
    source: Literal["api", "agent"] = Field(
        description="POST /dnc, or the agent during a call (a callee who asked)"
    )
    call_id: str | None = Field(description="The call the agent was on")
    added_at: Timestamp


class DncList(BaseModel):
    model_config = ConfigDict(extra="forbid")

    numbers: list[DncEntryView]
    next_after: str | None


def normalized(value: object, where: str) -> str:
    """A number as the list keeps it (E.164); InvalidCall with the field otherwise. The
    list takes any well-formed number, even ones calls may not go to."""
    try:
        return e164(value)
    except ValueError as exc:
        raise InvalidCall([FieldError(where, str(exc))]) from None


# Numbers are parsed on a thread of their own: 10,000 of them (a list synced at once) took
# 250-300 ms of the loop, every other request (calls, webhooks, probes) waiting behind them;
# two clients posting such lists made placing a call take 2.3 s.
_PARSING = OwnThreads(1, "dnc-parse")


def _all_normalized(numbers: list[object]) -> list[str]:
    """Each number in E.164, each once, in the order given; InvalidCall with every bad one."""
    clean, errors = [], []
    for i, value in enumerate(numbers):
        try:
            clean.append(normalized(value, f"numbers[{i}]"))
        except InvalidCall as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidCall(errors)
    return list(dict.fromkeys(clean))  # each once, in the order given (probe AP: echoed twice)


async def add_numbers(request: web.Request) -> web.Response:
    """POST /dnc {"numbers": [...]}: add them (all or none: every bad one is listed)."""
    raw_doc = decode_json_object(request, await read_body(request, MAX_BODY_BYTES))
    doc = request_object(raw_doc, ("numbers",), '{"numbers": [...]}')
    numbers = doc.get("numbers")
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= MAX_NUMBERS:
        raise InvalidCall([FieldError("numbers", f"must be a list of 1 to {MAX_NUMBERS} numbers")])
    clean = await _PARSING.run(_all_normalized, numbers)
    added = await request.app[STORE].add_dnc(clean, "api")
    hung_up = await request.app[CALLS].hang_up_unanswered_to(clean)
    return json_answer(DncAdded(status="success", added=added, numbers=clean, hung_up=hung_up))


async def remove_number(request: web.Request) -> web.Response:
    """DELETE /dnc/{number}: the number may be called again."""
    written = request.match_info["number"]
    try:
        number = e164(written)
    except ValueError as exc:
        if well_formed_e164(written) is None:  # a spreadsheet's "+4930123456.0" too: 422
            raise InvalidCall([FieldError("number", str(exc))]) from None
        # Well formed but no phone number (no country has its code): never on the list.
        raise HttpError(404, "number is not on the do-not-call list") from None
    store = request.app[STORE]
    # An entry an older release keyed in the number's old form (a Mexican mobile's +52 1,
    # from an agent's report) goes too: it could not be removed otherwise.
    removed = [await store.remove_dnc(form) for form in listed_forms(number)]
    if not any(removed):
        raise HttpError(404, "number is not on the do-not-call list")
    return json_answer(DncRemoved(status="success", phone_number=number))


def after_param(request: web.Request) -> str | None:
    """Where the previous page ended: its `next_after`, a number (None: from the start).

    A number pasted into a URL unencoded arrives with its "+" as a space (form decoding):
    a leading space is read as the "+" it was. Anything else without E.164's syntax is a
    400: compared as text, it paged from wherever it sorted (a "+" lost to a space gave
    page 1 again, and a pager looped for ever; "zzz" gave an empty page)."""
    text = request.query.get("after")
    if not text:
        return None
    if text.startswith(" "):
        text = "+" + text[1:]
    key = compact_e164(text)
    if key is None or well_formed_e164(text) is None:  # (a decimal's dot is no separator)
        raise HttpError(400, "after must be an E.164 number, the next_after of the previous page")
    try:
        return written_e164(text)  # the key as listed, whatever form an older release kept
    except ValueError:  # well formed but no number: it sorts where its text does
        return key


async def list_numbers(request: web.Request) -> web.Response:
    """GET /dnc?limit=&after=: the list, by number."""
    limit = LIST_LIMIT.of(request)
    after = after_param(request)
    entries, last = page_of(await request.app[STORE].list_dnc(limit=limit + 1, after=after), limit)
    return web.json_response(
        {
            "numbers": [e.to_json() for e in entries],
            "next_after": last.number if last else None,
        }
    )


def setup(app: web.Application) -> None:
    add_route(
        app,
        RouteDoc(
            "POST",
            "/dnc",
            "addDoNotCall",
            "Put numbers on the do-not-call list",
            body=DncBody,
            protected=True,
            replies={
                200: Reply("Added", DncAdded),
                400: Reply("The body is not UTF-8 JSON, or any query (the numbers go in the body)"),
                401: UNAUTHORIZED,
                413: Reply(f"The body is larger than {MAX_BODY_BYTES} bytes"),
                422: Reply(
                    f"An unknown field, `numbers` not a list of 1 to {MAX_NUMBERS}, or numbers"
                    " that are no phone numbers; `details` lists each"
                ),
                503: DB_DOWN,
            },
        ),
        add_numbers,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/dnc",
            "listDoNotCall",
            "The do-not-call list, by number",
            protected=True,
            parameters=[
                LIST_LIMIT.doc,
                {
                    "name": "after",
                    "in": "query",
                    "schema": {"type": "string", "pattern": AFTER_SYNTAX},
                    "description": "next_after of the previous page: an E.164 number"
                    " (%2B for the +; a + decoded to a space is read as one)",
                },
            ],
            replies={
                200: Reply("Numbers", DncList),
                400: Reply("A bad query parameter: a limit out of range, an after not a number"),
                401: UNAUTHORIZED,
                503: DB_DOWN,
            },
        ),
        list_numbers,
    )
    add_route(
        app,
        RouteDoc(
            "DELETE",
            "/dnc/{number}",
            "removeDoNotCall",
            "Take a number off the do-not-call list",
            protected=True,
            parameters=[
                {
                    "name": "number",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": PHONE_SYNTAX},
                    "description": "E.164, URL-encoded (%2B for the +)",
                }
            ],
            replies={
                200: Reply("Removed", DncRemoved),
                401: UNAUTHORIZED,
                404: Reply("Not on the list"),
                422: Reply("Not a phone number"),
                503: DB_DOWN,
            },
        ),
        remove_number,
    )
