"""`/campaigns` routes: create a campaign (JSON, CSV, or multipart with both), see it and its
recipients, pause, resume or cancel it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from common import freed_memory
from common.calls.admission import Admission
from common.calls.errors import FieldError, InvalidCall, request_object
from common.calls.models import IdempotencyClaim, StoredAnswer, canonical_json
from common.calls.request import RequestRules
from common.calls.views import Timestamp
from common.campaigns.csv_rows import CsvRejected, UnknownCharset, csv_codec, parse_csv
from common.campaigns.model import RECIPIENT_STATES, RETRYABLE, CampaignRecord
from common.campaigns.request import (
    ATTEMPTS_RANGE,
    CONCURRENT_RANGE,
    CPS_RANGE,
    DELAY_RANGE,
    MAX_RECIPIENTS,
    OPTION_KEYS,
    QUERY_PARAMS,
    csv_rows,
    invalid_rows_answer,
    json_rows,
    merged_options,
    options_from_query,
    parse_options,
)
from common.campaigns.windows import DAY_NAMES
from common.own_threads import OwnThreads
from common.storage.base import KeyTaken
from common.storage.campaign_programs import MAX_RESUMES
from common.storage.paging import Before
from common.text import MAX_QUOTED_CHARS, shown_text
from handlers.errors import HttpError
from handlers.http import (
    BEFORE_PARAM,
    DB_DOWN,
    UNAUTHORIZED,
    PageLimit,
    Reply,
    RouteDoc,
    add_route,
    arriving_in_time,
    before_param,
    client_identity,
    decode_json,
    discard_body,
    idempotency_key,
    idempotency_param,
    int_param,
    page_of,
    read_body,
    refuse_undecoded_encoding,
    stopping_unread,
)
from handlers.keys import BODY_READS, CALLS, CAMPAIGNS, SETTINGS, UPLOAD_TURNS

MAX_BODY_BYTES = 64 * 1024 * 1024  # 100,000 rows of a few hundred bytes each
# Campaign uploads a server reads, checks and stores at once; the others wait their turn
# (their bodies unread) for UPLOAD_TURN_WAIT_S at most, then 429. One 100,000-row CSV of
# 50 MiB takes the server from 64 to ~470 MB for its ~11 s; three at once took 800 MB and
# 28 s each, so a handful sent together could get the server killed for memory.
UPLOADS_AT_ONCE = 1
UPLOAD_TURN_WAIT_S = 60.0
UPLOAD_RETRY_AFTER_S = 10
# JSON's parser holds the GIL for a whole body, and its time goes with the values it builds:
# 63 MiB of "[]," (22 million empty lists) stopped every other request for 6 s and took
# 1.7 GB; 60 MiB of "1.5e300," in one list, 3 s. A row is an object of a few values; a body
# with more than this is refused unparsed. Counted as bytes, inside strings too (an upper
# bound): containers as "{" and "[", 20 a row at the most rows; values as those and ","
# (a list of n values holds n - 1 commas), 50 a row: names ("Smith, John") and instructions
# hold commas of their own (review AR: 80,000 such rows, refused at 20). At that bound a
# list of floats parses in ~1.7 s.
MAX_JSON_CONTAINERS = 20 * MAX_RECIPIENTS
MAX_JSON_TOKENS = 50 * MAX_RECIPIENTS
LIST_LIMIT = PageLimit(default=100, maximum=1000)
CSV_TYPES = ("text/csv", "application/csv")
# How the OpenAPI document shows the uploads besides the JSON body.
UPLOAD_PARAMS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "query",
        "schema": {"type": "string"},
        "description": "CSV and multipart uploads only: `options` is the JSON options, the"
        " others one option each (name, invalid_rows, start_at, pacing, window, retry), as"
        " the JSON body has them",
    }
    for name in QUERY_PARAMS
]
CSV_BODY: dict[str, Any] = {
    "type": "string",
    "description": "A header row (phone_number required; name, dynamic_instruction,"
    " language, emotion, first_message, webhook_url map to call fields; other columns"
    " go to additional_params, but for ringing_timeout_s, max_duration_s, voicemail and"
    " analysis, refused: set them in defaults, and a call field in other words, First"
    " Message or FirstMessage, refused: rename it), then a row per recipient; options in the"
    " query. A `timezone` column (an IANA zone, or blank) is the recipient's own, read"
    " as additional_params.timezone is",
}
UPLOAD_BODIES: dict[str, dict[str, Any]] = {
    # Each type read as a CSV (application/csv too: documented as text/csv alone, a client
    # sending the other type, which the server takes, did so against the document)
    **dict.fromkeys(CSV_TYPES, CSV_BODY),
    # Any other part is refused (422, `_multipart_parts`): documented as open, a client generated
    # from the document knew neither `file` nor the option fields, and sent parts refused.
    "multipart/form-data": {
        "type": "object",
        "properties": {
            "options": {"type": "string", "description": "The options, as JSON"},
            "recipients": {"type": "string", "format": "binary", "description": "The CSV"},
            "file": {"type": "string", "format": "binary", "description": "The CSV (or this)"},
            **{
                name: {"type": "string", "description": "One option, as the query's parameter"}
                for name in QUERY_PARAMS
                if name != "options"
            },
        },
        "additionalProperties": False,
    },
}
# A multipart upload's parts: `options` and `recipients` (or `file`) are read, a form may add a
# few of its own; each part costs the loop a parse of its headers (200,000 tiny parts held
# every other request for 13 s).
MAX_PARTS = 16
# The options are a call's fields and the campaign's settings: a call's whole body is 64 KiB.
MAX_OPTIONS_BYTES = 256 * 1024
# A form field holds one option, as a query parameter does: the request line bounds those
# (aiohttp's 8 KiB). Unbounded, a field took the body's 64 MiB: 5,000,000 bad window_days
# were checked one by one for 20 s, and a time zone was quoted back whole in the answer.
MAX_FIELD_BYTES = 8 * 1024
MAX_PARSE_ERROR_CHARS = 200  # of aiohttp's message, which may quote the client's bytes


DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
assert get_args(DayName) == DAY_NAMES  # noqa: S101 - one list, read at import
RetryOn = Literal["busy", "no_answer", "voicemail", "failed"]
assert get_args(RetryOn) == RETRYABLE  # noqa: S101 - one list, read at import
HH_MM = "^([01][0-9]|2[0-3]):[0-5][0-9]$"


# The options as parse_options reads them (common/campaigns/request.py), for /openapi.json
# only: each key optional, null its default, any other key refused (422). Documented as
# free objects, a client generated from the document typed them as any dict and sent what
# the server then refused.
class PacingOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls_per_second: float | None = Field(
        default=None, ge=CPS_RANGE[0], le=CPS_RANGE[1], description="Default 1.0"
    )
    max_concurrent: int | None = Field(
        default=None, ge=CONCURRENT_RANGE[0], le=CONCURRENT_RANGE[1], description="Default 10"
    )


class WindowOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str | None = Field(default=None, pattern=HH_MM, description="HH:MM; default 09:00")
    end: str | None = Field(
        default=None,
        pattern=f"{HH_MM}|^24:00$",
        description='HH:MM (not included), after start; "24:00" is midnight; default 20:00',
    )
    days: list[DayName] | None = Field(default=None, min_length=1, description="Default all")
    timezone: str | None = Field(default=None, description='"recipient" (default) or an IANA name')


class RetryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: list[RetryOn] = Field(
        default=["busy", "no_answer"], description="The call statuses tried again"
    )
    max_attempts: int | None = Field(
        default=None,
        ge=ATTEMPTS_RANGE[0],
        le=ATTEMPTS_RANGE[1],
        description="Default 3 (1 when `on` is empty)",
    )
    delay_s: float | None = Field(
        default=None, ge=DELAY_RANGE[0], le=DELAY_RANGE[1], description="Default 600"
    )


class CampaignBody(BaseModel):
    """POST /campaigns as JSON (CSV: the rows as text/csv, these options in the query)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    recipients: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description="Each row: phone_number and any POST /calls/outbound field over defaults;"
        ' an IANA zone in additional_params.timezone is the recipient\'s own: a "recipient"'
        " window and the calling-hours floor must be open there too (with its number's zones;"
        " it narrows the hours, never widens them); any other value is refused",
    )
    defaults: dict[str, Any] = Field(
        default_factory=dict, description="POST /calls/outbound fields every row starts from"
    )
    pacing: PacingOptions | None = None
    window: WindowOptions | None = None
    retry: RetryOptions | None = None
    start_at: str | None = Field(default=None, description="ISO-8601 with a UTC offset")
    invalid_rows: Literal["reject", "skip"] = Field(
        default="reject", description="Rows that are invalid: refuse them all, or skip them"
    )


# The answers' shapes, as CampaignRecord.to_json and RecipientRecord.to_json write them
# (closed: a field added there and not here fails the document's checks, tests/reliability).
RecipientState = Literal[
    "pending",
    "waiting_window",
    "calling",
    "completed",
    "busy",
    "no_answer",
    "voicemail",
    "failed",
    "dnc",
    "invalid",
    "canceled",
    "erased",
]
assert get_args(RecipientState) == RECIPIENT_STATES  # noqa: S101 - one list, read at import


class CampaignCounts(BaseModel):
    """Its recipients by state."""

    model_config = ConfigDict(extra="forbid")

    pending: int
    waiting_window: int
    calling: int
    completed: int
    busy: int
    no_answer: int
    voicemail: int
    failed: int
    dnc: int
    invalid: int
    canceled: int
    erased: int


class CampaignPacing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calls_per_second: float
    max_concurrent: int


class CampaignWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(description="HH:MM, local time")
    end: str = Field(description='HH:MM, local time (not included); "24:00" is midnight')
    days: list[DayName]
    timezone: str = Field(
        description="\"recipient\" (the number's own zones, and a row's own timezone) or an"
        " IANA name"
    )


class CampaignRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: list[str] = Field(description="The call statuses tried again")
    max_attempts: int
    delay_s: float


class CampaignView(BaseModel):
    """A campaign: its status, its recipients' counts, its pace and its options."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str
    name: str
    status: Literal["scheduled", "running", "paused", "completed", "canceled"]
    total: int = Field(description="Recipients, invalid ones included")
    counts: CampaignCounts
    attempts: int = Field(description="Attempts placed (a not_dialled one included)")
    created_at: Timestamp
    start_at: Timestamp
    started_at: Timestamp | None
    ended_at: Timestamp | None
    achieved_calls_per_second: float | None
    next_call_at: Timestamp | None
    estimated_finish_at: Timestamp | None = Field(
        description="When the last waiting recipient's call goes out, at the campaign's pace"
        " inside its window and calling hours (an estimate: see the README's Campaigns)"
    )
    # null, each, for a campaign whose stored options no longer read (`unreadable`)
    defaults: dict[str, Any] | None
    pacing: CampaignPacing | None
    window: CampaignWindow | None
    retry: CampaignRetry | None
    unreadable: str | None = Field(
        default=None,
        description="Given only for a campaign whose stored options no longer read (a hand"
        " edit of the database, or a newer release's option): why. Its defaults, pacing,"
        " window, retry, next_call_at and estimated_finish_at are null, and no server of this"
        " release places its calls; it can be paused, resumed, canceled and read as any",
    )


class RowProblem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row: int = Field(description="The index in recipients, or a CSV's spreadsheet row")
    field: str
    error: str


class CampaignAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["success"]
    campaign_id: str
    campaign: CampaignView
    invalid_row_count: int | None = Field(
        default=None, description="POST /campaigns: the rows skipped (invalid_rows=skip)"
    )
    invalid_rows: list[RowProblem] | None = Field(
        default=None, description="POST /campaigns: the first of the rows skipped"
    )


class CampaignListAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaigns: list[CampaignView]
    next_before: str | None


class AttemptView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attempt: int
    call_id: str | None = Field(description="Its call, once recorded")
    status: str | None = Field(
        description="How it ended: its call's status, not_dialled, dnc or invalid"
    )
    placed_at: Timestamp
    ended_at: Timestamp | None


class RecipientError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str
    error: str


class RecipientView(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipient: int = Field(description="Its index in the list (pass as after=)")
    row: int = Field(description="The index in recipients, or a CSV's spreadsheet row")
    phone_number: str
    state: RecipientState
    attempts: list[AttemptView]
    next_attempt_at: Timestamp | None
    errors: list[RecipientError]


class RecipientsAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recipients: list[RecipientView]
    next_after: int | None


def _campaign_answer(
    request: web.Request, campaign: Any, status: int = 200, **extra: Any
) -> web.Response:
    service = request.app[CAMPAIGNS]
    now = service.clock()
    body = {"status": "success", "campaign_id": campaign.campaign_id, **extra}
    body["campaign"] = campaign.to_json(now, service.settings.campaign_enforce_calling_hours)
    answer = web.json_response(body, status=status)
    if status == 201:  # created: where it is (a client following the standard reads it)
        answer.headers["Location"] = f"/campaigns/{campaign.campaign_id}"
    return answer


@dataclass(frozen=True)
class _Upload:
    """A campaign as sent: its options, its rows, the rows refused while reading them, and
    the CSV they came in (None: a JSON body, whose options hold the rows)."""

    options: dict[str, Any]
    rows: Any
    parse_errors: list[Any]
    csv: bytes | None = None
    # The codec the CSV's bytes were read with (csv_codec): another one reads other rows.
    codec: str = "utf-8"
    # A JSON body's `recipients` that is no list of rows: said with the options' problems
    # (one answer lists them all: a bad rate came only once the list was fixed, probe AU).
    refused: tuple[FieldError, ...] = ()

    def digest(self) -> str:
        """What an Idempotency-Key covers: the options as given (a JSON body's with its rows,
        spelled in any key order or spacing) and a CSV's bytes, whether the options came in
        the query or a multipart part (whose boundary changes with each try). The same list
        in another form (CSV against JSON, CRLF against LF) is another request: 409."""
        read_as = b"" if self.codec == "utf-8" else b"\0" + self.codec.encode()  # UTF-8's as before
        return hashlib.sha256(
            canonical_json(self.options) + b"\0" + (self.csv or b"") + read_as
        ).hexdigest()


# Campaigns' keys are kept beside calls' keys: the same key names a call and a campaign apart.
CAMPAIGN_KEY_SPACE = "campaigns\0"


async def create_campaign(request: web.Request) -> web.Response:
    """POST /campaigns: 201 with the campaign and the rows refused (with invalid_rows=skip).
    With an Idempotency-Key, a retry of the same campaign answers 201 with it again
    (`Idempotent-Replay: 1`), never a second campaign; another campaign under the key, 409."""
    key = idempotency_key(request)
    async with upload_turn(request):
        try:
            return await _create(request, key)
        finally:
            # The list's rows are freed as its answer leaves (the error's too: no await holds
            # it), and glibc kept them resident: 63 MiB of rows refused left the server at
            # 894 MB for good. Given back on the parsing thread, after this task's step.
            asyncio.get_running_loop().call_soon(_PARSING.submit, freed_memory.give_back)


async def _create(request: web.Request, key: str | None) -> web.Response:
    service = request.app[CAMPAIGNS]
    settings = request.app[SETTINGS]
    client = client_identity(request)
    upload = await _read_campaign(request)
    rules = RequestRules.of(settings)
    try:
        options = await _PARSING.run(parse_options, upload.options, rules, service.clock())
    except InvalidCall as exc:
        raise InvalidCall([*upload.refused, *exc.errors]) from None
    if upload.refused:
        raise InvalidCall(list(upload.refused))
    claim = None
    if key is not None:
        digest = await _PARSING.run(upload.digest)
        claim = IdempotencyClaim.of_digest(client, CAMPAIGN_KEY_SPACE + key, digest)
        # KeyReused (409) if another campaign (or request) holds the key
        bound = await request.app[CALLS].admission.bound(claim)
        if bound is not None:
            return await _created_before(request, bound)
    try:
        created = await service.create(options, upload.rows, client, upload.parse_errors, claim)
    except KeyTaken as taken:  # a retry sent at the same moment created it
        assert claim is not None  # noqa: S101 - only a claim can be taken
        return await _created_before(request, Admission.verify(taken.stored, claim))
    invalid = invalid_rows_answer(created.invalid_rows)
    return _campaign_answer(request, created.campaign, 201, **invalid)


@contextlib.asynccontextmanager
async def upload_turn(request: web.Request) -> AsyncIterator[None]:
    """This upload's turn among the server's (UPLOADS_AT_ONCE): waited for UPLOAD_TURN_WAIT_S
    at most (429 with Retry-After), or until the server stops (503, as a body still arriving
    then: handlers/body_reads.py)."""
    turns, reads = request.app[UPLOAD_TURNS], request.app[BODY_READS]
    bound = asyncio.timeout(UPLOAD_TURN_WAIT_S)
    try:
        async with bound:
            reads.add(bound)
            try:
                await turns.acquire()
            finally:
                reads.discard(bound)
    except TimeoutError:
        if not bound.expired():
            raise
        if reads.stopping:
            raise stopping_unread(
                request, "the server is stopping: the campaign was not read; send it again"
            ) from None
        # Its body, read to its end and dropped: closed on it, a client still sending got a
        # connection reset, not this answer.
        await discard_body(request, MAX_BODY_BYTES)
        raise HttpError(
            429,
            f"other campaigns are being created on this server ({UPLOADS_AT_ONCE} at a time,"
            " 10-20 s each for 100,000 rows): this one was not created; send it again",
            {"Retry-After": str(UPLOAD_RETRY_AFTER_S)},
        ) from None
    try:
        yield
    finally:
        turns.release()


async def _created_before(request: web.Request, stored: StoredAnswer) -> web.Response:
    """The campaign a key created (for this same request), as it is now, with the rows
    refused then."""
    campaign = await request.app[CAMPAIGNS].get(stored.call_id)
    invalid = stored.body or invalid_rows_answer([])  # (bound with its answer: never empty)
    answer = _campaign_answer(request, campaign, 201, **invalid)
    answer.headers["Idempotent-Replay"] = "1"
    return answer


async def _read_campaign(request: web.Request) -> _Upload:
    """A JSON, CSV or multipart body's campaign."""
    content_type = request.content_type
    if content_type.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await read_body(request, MAX_BODY_BYTES)
    if content_type in CSV_TYPES:
        options = options_from_query(request.query)
        codec = _codec(request.charset)
        return _Upload(options, *await _PARSING.run(_csv, raw, codec), csv=raw, codec=codec)
    # A JSON body carries its own options: query values would be dropped (empty ones say
    # nothing, as a form or a generated client sends them).
    if given := [key for key, value in request.query.items() if value]:
        why = _query_options_refused(request)
        raise InvalidCall([FieldError(key, why) for key in given])
    containers = raw.count(b"{") + raw.count(b"[")
    tokens = containers + raw.count(b",")
    if containers > MAX_JSON_CONTAINERS or tokens > MAX_JSON_TOKENS:
        over, limit, what = (
            (containers, MAX_JSON_CONTAINERS, "'{' and '['")
            if containers > MAX_JSON_CONTAINERS
            else (tokens, MAX_JSON_TOKENS, "'{', '[' and ','")
        )
        raise HttpError(
            413,
            f"request body holds {over} {what} characters (strings' included), more than the"
            f" {limit} a campaign's JSON may hold: {MAX_RECIPIENTS} rows at most, of a few"
            " values each; send a long list as CSV",
        )
    try:
        doc = await _PARSING.run(decode_json, raw)
    except HttpError as exc:
        if not _declared_json(content_type):  # a CSV sent as text/plain, or with no type
            exc.message += f" (read as JSON: {_send_csv_instead(request)})"
        raise
    doc = request_object(doc, (*OPTION_KEYS, "recipients"))
    recipients = doc.get("recipients")
    if not isinstance(recipients, list) or not recipients:
        refused = FieldError("recipients", "is required: a non-empty list of rows")
        return _Upload(doc, [], [], refused=(refused,))
    if len(recipients) > MAX_RECIPIENTS:
        refused = FieldError("recipients", f"at most {MAX_RECIPIENTS} rows")
        return _Upload(doc, [], [], refused=(refused,))
    return _Upload(doc, await _PARSING.run(json_rows, recipients), [])


# A list saved as tab-separated values (a spreadsheet's "Text (Tab delimited)"): not read.
TSV_TYPES = ("text/tab-separated-values", "text/tsv")


def _declared_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def _query_options_refused(request: web.Request) -> str:
    """Why a body that is no CSV or multipart upload takes no query options. A TSV, a CSV
    sent as text/plain, one with curl's default type for --data-binary (a form's) or with none
    were all told "a JSON body holds its own", which none of them was; each is told what its
    Content-Type is and what to send instead."""
    why = "query options are for CSV uploads (Content-Type: text/csv) and multipart ones"
    if _declared_json(request.content_type):
        return f"{why}; a JSON body holds its own"
    if request.content_type in TSV_TYPES:
        return f"{why}; {_send_csv_instead(request)}"
    return f"{why}; {_send_csv_instead(request)}, or a JSON body (application/json) holding them"


def _send_csv_instead(request: web.Request) -> str:
    """What to send in place of a body of a type POST /campaigns does not read as a list."""
    content_type = request.content_type
    if content_type in TSV_TYPES:
        return (
            f"a tab-separated list ({content_type}) is not read: save it as CSV"
            " (comma-separated) and send it as text/csv"
        )
    if hdrs.CONTENT_TYPE not in request.headers:
        return "send a CSV as text/csv (this body came without a Content-Type)"
    shown = shown_text(content_type, MAX_QUOTED_CHARS)  # 8 KB of it came back whole
    return f"send a CSV as text/csv, not {shown}"


# Lists are parsed on a thread of their own, one at a time: on the loop, a list of 100,000
# recipients (up to 64 MiB) held every other request for a second or more (60 MiB of blank
# lines, 18 s); on the loop's default executor, a few uploads at once held the threads
# config.json's writes need (a call waited 10 s), and each parse its own copy of the text.
_PARSING = OwnThreads(1, "campaign-parse")


def _codec(charset: str | None, what: str = "request body") -> str:
    """The codec of a CSV's declared charset (UTF-8 when none is); 415 for one Python cannot
    decode text with."""
    try:
        return csv_codec(charset)
    except UnknownCharset:
        shown = shown_text(charset or "", 41)
        raise HttpError(
            415,
            f"{what}'s charset {shown!r} is not known: send the CSV as UTF-8 (no charset, or"
            " charset=utf-8), or name a known one (windows-1252, iso-8859-1, ...)",
        ) from None


def _csv(raw: bytes, codec: str = "utf-8") -> tuple[Any, list[Any]]:
    try:
        parsed = parse_csv(raw, max_rows=MAX_RECIPIENTS, codec=codec)
    except CsvRejected as exc:
        details = [FieldError(f"row {e.row}: {e.field}", e.error) for e in exc.errors]
        raise InvalidCall(details) from None
    return csv_rows(parsed.rows, parsed.refused), []  # the refused rows' errors: with them


@contextmanager
def _multipart_parsing() -> Iterator[None]:
    """aiohttp's multipart parser refuses a bad body (no boundary, broken part headers, a body
    cut short) with ValueError, RuntimeError or a BadHttpMessage: a 400 for the client. Wraps
    the parser's own calls only (our InvalidCall is a ValueError too)."""
    try:
        yield
    except (ValueError, RuntimeError, HttpProcessingError) as exc:
        reason = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
        if isinstance(exc, RecursionError):  # multipart nested in multipart, hundreds deep
            reason = "nested too deeply"
        reason = reason.strip() or type(exc).__name__
        if len(reason) > MAX_PARSE_ERROR_CHARS:
            reason = reason[:MAX_PARSE_ERROR_CHARS] + "..."
        raise HttpError(400, f"malformed multipart body: {reason}") from None


async def _read_multipart(request: web.Request) -> _Upload:
    """Parts `options` (JSON) and `recipients` (CSV; also accepted as `file`), all of which
    must arrive within the same bound as any other body."""
    refuse_undecoded_encoding(request)
    async with arriving_in_time(request):
        options, csv, codec = await _multipart_parts(request)
    if csv is None:
        raise InvalidCall([FieldError("recipients", "a CSV part named recipients is required")])
    return _Upload(options, *await _PARSING.run(_csv, csv, codec), csv=csv, codec=codec)


async def _multipart_parts(
    request: web.Request,
) -> tuple[dict[str, Any], bytes | None, str]:
    with _multipart_parsing():
        reader = await request.multipart()
    options_part: dict[str, Any] | None = None
    fields: dict[str, str] = {}  # a form's options, one field each, as the query's parameters
    csv: bytes | None = None
    codec = "utf-8"
    seen: set[str] = set()
    unknown: list[str] = []
    size = 0
    parts = 0
    while True:
        with _multipart_parsing():
            part = await reader.next()
        if part is None:
            break
        parts += 1
        if parts > MAX_PARTS:
            raise HttpError(400, f"a multipart upload holds at most {MAX_PARTS} parts")
        if not isinstance(part, BodyPartReader):  # a nested multipart (multipart/mixed)
            unknown.append("(nested multipart)")
            continue
        _refuse_encoded(part)
        chunks = []
        part_size = 0
        while True:
            with _multipart_parsing():
                chunk = await part.read_chunk()
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise HttpError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            part_size += len(chunk)
            if part.name == "options" and part_size > MAX_OPTIONS_BYTES:
                raise HttpError(413, f"the options part is larger than {MAX_OPTIONS_BYTES} bytes")
            if _is_field(part) and part_size > MAX_FIELD_BYTES:
                raise HttpError(
                    413, f"the form field {part.name} is larger than {MAX_FIELD_BYTES} bytes"
                )
        data = b"".join(chunks)
        name = part.name
        if name in seen and name in (*QUERY_PARAMS, "recipients", "file"):
            # The last one won: of two lists attached, the first was never called.
            raise InvalidCall([FieldError(name, "only one part of this name is read")])
        seen.add(name or "")
        if name == "options" and not data:  # a form's blank field: not given, as the others
            continue
        if name == "options":
            doc = _options_part(data)
            if not isinstance(doc, dict):
                raise InvalidCall([FieldError("options", "must be a JSON object")])
            options_part = doc
        elif name and _is_field(part):
            # A form's own fields (`requests.post(files=..., data={"name": ...})`): read as
            # the query's parameters are (a file by such a name is not one).
            fields[name] = _field_text(name, data)
        elif name in ("recipients", "file"):
            if csv is not None:
                raise InvalidCall([FieldError(name, "one list per campaign: recipients or file")])
            csv = data
            codec = _codec(part.get_charset(""), f"the {name} part")
        else:  # a second list, say: said, not dropped unread
            unknown.append("(no name)" if not name else shown_text(name, 41))
    if unknown:
        why = (
            "unknown part; an upload has recipients (or file), and its options as an options"
            " part or as fields named as the query's parameters"
        )
        raise InvalidCall([FieldError(name, why) for name in unknown])
    both = [name for name in fields if name in request.query]
    if both:
        raise InvalidCall(
            [FieldError(name, "is given both in the query and as a form field") for name in both]
        )
    options = options_from_query({**request.query, **fields})
    options = options if options_part is None else merged_options(options, options_part)
    return options, csv, codec


# A part's Content-Transfer-Encoding that leaves its bytes as they are (RFC 2045); a
# multipart/form-data part should carry none (RFC 7578 4.7).
IDENTITY_TRANSFER_ENCODINGS = frozenset(("", "binary", "8bit", "7bit"))


def _refuse_encoded(part: BodyPartReader) -> None:
    """415 for a part whose bytes are encoded (Content-Transfer-Encoding base64 or
    quoted-printable, a Content-Encoding): parts are read as they came, and such a part was
    taken as its encoded text. A quoted-printable list was created as written, its callees
    greeted as "Jos=C3=A9" (and a row cut by a soft line break, "=" at its end); a base64
    one was told its header had no phone_number column, a gzip one that it held a NUL."""
    name = "(no name)" if not part.name else shown_text(part.name, 41)
    transfer = part.headers.get("Content-Transfer-Encoding", "").strip()
    if transfer.lower() not in IDENTITY_TRANSFER_ENCODINGS:
        raise HttpError(
            415,
            f"the {name} part's Content-Transfer-Encoding {shown_text(transfer, 41)!r} is not"
            " supported: send the part's bytes as they are (binary, as multipart/form-data"
            " does), without a Content-Transfer-Encoding",
        )
    encoding = part.headers.get("Content-Encoding", "").strip()
    if encoding.lower() not in ("", "identity"):
        raise HttpError(
            415,
            f"the {name} part's Content-Encoding {shown_text(encoding, 41)!r} is not"
            " supported: send the part uncompressed (or the whole body with Content-Encoding:"
            " gzip)",
        )


def _options_part(data: bytes) -> object:
    """The options part's JSON; its 400 names the part ("request body is not valid JSON" sent
    a client looking at a multipart body it had built right)."""
    try:
        return decode_json(data)
    except HttpError as exc:
        exc.message = exc.message.replace("request body", "the options part", 1)
        raise


def _is_field(part: BodyPartReader) -> bool:
    """A form's own field holding one option (not the options part, not a file)."""
    return part.name in QUERY_PARAMS and part.name != "options" and part.filename is None


def _field_text(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCall([FieldError(name, "must be UTF-8 text")]) from None


async def list_campaigns(request: web.Request) -> web.Response:
    limit = LIST_LIMIT.of(request)
    before = before_param(request)
    service = request.app[CAMPAIGNS]
    found, last = page_of(await service.store.list_campaigns(limit=limit + 1, before=before), limit)
    now = service.clock()
    enforce = service.settings.campaign_enforce_calling_hours
    next_before = Before.after(last.created_at, last.campaign_id).token if last else None
    text = await _PAGES.run(_campaigns_page, found, next_before, now, enforce)
    return web.Response(text=text, content_type="application/json")  # as json_response


# A page of campaigns is written on a thread of its own: each campaign's estimated finish
# reads its next number's zones, and 1,000 of them written on the loop held every other
# request 40-60 ms (170 ms when their numbers were new to the process), then 12 ms more
# for the JSON text.
_PAGES = OwnThreads(1, "campaign-page")


def _campaigns_page(
    found: list[CampaignRecord], next_before: str | None, now: float, enforce: bool
) -> str:
    campaigns = [c.to_json(now, enforce) for c in found]
    return json.dumps({"campaigns": campaigns, "next_before": next_before})


async def get_campaign(request: web.Request) -> web.Response:
    campaign = await request.app[CAMPAIGNS].get(request.match_info["campaign_id"])
    return _campaign_answer(request, campaign)


async def recipients(request: web.Request) -> web.Response:
    state = request.query.get("status") or None
    if state is not None and state not in RECIPIENT_STATES:
        raise HttpError(400, f"status must be one of {', '.join(RECIPIENT_STATES)}")
    limit = LIST_LIMIT.of(request)
    after = (
        int_param(request, "after", -1, -1, MAX_RECIPIENTS) if "after" in request.query else None
    )
    found, last = page_of(
        await request.app[CAMPAIGNS].recipients(
            request.match_info["campaign_id"], state=state, limit=limit + 1, after=after
        ),
        limit,
    )
    return web.json_response(
        {
            "recipients": [r.to_json() for r in found],
            "next_after": last.idx if last else None,
        }
    )


def _control(action: str) -> Any:
    async def control(request: web.Request) -> web.Response:
        campaign = await request.app[CAMPAIGNS].control(request.match_info["campaign_id"], action)
        return _campaign_answer(request, campaign)

    control.__name__ = f"{action}_campaign"
    return control


CAMPAIGN_ID = {
    "name": "campaign_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The campaign id answered by POST /campaigns",
}


def setup(app: web.Application) -> None:
    app[UPLOAD_TURNS] = asyncio.Semaphore(UPLOADS_AT_ONCE)
    add_route(
        app,
        RouteDoc(
            "POST",
            "/campaigns",
            "createCampaign",
            "Call a list of people: paced, within their calling hours, with retries",
            body=CampaignBody,
            other_bodies=UPLOAD_BODIES,
            parameters=[idempotency_param("a second campaign"), *UPLOAD_PARAMS],
            protected=True,
            replies={
                201: Reply(
                    "Created (or, under an Idempotency-Key used before with the same campaign,"
                    " created then: `Idempotent-Replay: 1`); invalid_rows lists the rows skipped",
                    CampaignAnswer,
                    headers=("Location", "Idempotent-Replay"),
                ),
                400: Reply(
                    "A JSON body that is not JSON in UTF-8, or a malformed multipart body (or"
                    f" one of more than {MAX_PARTS} parts)"
                ),
                401: UNAUTHORIZED,
                413: Reply(
                    f"The body is larger than {MAX_BODY_BYTES} bytes, a multipart options part"
                    f" larger than {MAX_OPTIONS_BYTES}, or a form field larger than"
                    f" {MAX_FIELD_BYTES}"
                ),
                415: Reply(
                    "The body's Content-Encoding is not gzip, deflate or none, or a multipart"
                    " part has a Content-Transfer-Encoding (base64, quoted-printable) or a"
                    " Content-Encoding: parts are read as their bytes; or the CSV's charset"
                    " is one the server does not know"
                ),
                422: Reply(
                    "Invalid options or rows, or a CSV that cannot be read (not UTF-8 or its"
                    " declared charset, no"
                    " phone_number column, broken quoting); `details` lists each (with its row)"
                ),
                409: Reply("The Idempotency-Key was already used with another campaign"),
                429: Reply(
                    f"Other campaigns were being created on this server for"
                    f" {UPLOAD_TURN_WAIT_S:g} s ({UPLOADS_AT_ONCE} at a time): this one was"
                    " not created; send it again after Retry-After",
                    headers=("Retry-After",),
                ),
                503: DB_DOWN,
            },
        ),
        create_campaign,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/campaigns",
            "listCampaigns",
            "Campaigns, newest first",
            protected=True,
            parameters=[
                LIST_LIMIT.doc,
                BEFORE_PARAM,
            ],
            replies={
                200: Reply("Campaigns", CampaignListAnswer),
                400: Reply("A bad query parameter"),
                401: UNAUTHORIZED,
                503: DB_DOWN,
            },
        ),
        list_campaigns,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/campaigns/{campaign_id}",
            "getCampaign",
            "A campaign: counts by state, attempts, achieved rate, next call, estimated end",
            protected=True,
            parameters=[CAMPAIGN_ID],
            replies={
                200: Reply("The campaign", CampaignAnswer),
                401: UNAUTHORIZED,
                404: Reply("No such campaign"),
                503: DB_DOWN,
            },
        ),
        get_campaign,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/campaigns/{campaign_id}/recipients",
            "campaignRecipients",
            "A campaign's recipients with their attempts and call ids",
            protected=True,
            parameters=[
                CAMPAIGN_ID,
                {
                    "name": "status",
                    "in": "query",
                    "allowEmptyValue": True,  # status= is no filter
                    "schema": {"enum": list(RECIPIENT_STATES)},
                },
                LIST_LIMIT.doc,
                {
                    "name": "after",
                    "in": "query",
                    "description": "next_after of the previous page",
                    "allowEmptyValue": True,  # after= is from the first
                    "schema": {"type": "integer", "minimum": -1, "maximum": MAX_RECIPIENTS},
                },
            ],
            replies={
                200: Reply("Recipients, in list order", RecipientsAnswer),
                400: Reply("A bad query parameter"),
                401: UNAUTHORIZED,
                404: Reply("No such campaign"),
                503: DB_DOWN,
            },
        ),
        recipients,
    )
    for action, summary in (
        ("pause", "Stop placing new calls until resumed (calls already dialled go on)"),
        ("resume", "Go on placing calls"),
        ("cancel", "Stop for good: no new calls; live ones finish"),
    ):
        add_route(
            app,
            RouteDoc(
                "POST",
                f"/campaigns/{{campaign_id}}/{action}",
                f"{action}Campaign",
                summary,
                protected=True,
                parameters=[CAMPAIGN_ID],
                replies={
                    200: Reply("Done", CampaignAnswer),
                    401: UNAUTHORIZED,
                    404: Reply("No such campaign"),
                    409: Reply("Not possible in the campaign's status"),
                    **(
                        {
                            429: Reply(
                                f"Resumed {MAX_RESUMES} times within the last hour already",
                                headers=("Retry-After",),
                            )
                        }
                        if action == "resume"
                        else {}
                    ),
                    503: DB_DOWN,
                },
            ),
            _control(action),
        )
