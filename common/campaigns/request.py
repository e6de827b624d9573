"""`POST /campaigns`: the options and the recipients, validated into a `NewCampaign` (pure).

Every row is validated as the single call it will become: the campaign's `defaults` with the
row's own fields over them, through the same `OutboundCall` model as `POST /calls/outbound`
(same rules, same messages), and a row's problems carry its number: the index in
`recipients` for JSON, the spreadsheet row for CSV. Two more row rules: a number given twice
is called once (the later row is refused), and a number that is never inside the calling
window (its time zones never overlap the window within two weeks, or no zone is known for it)
is refused rather than left waiting for ever.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, overload

from common.calls.errors import FieldError, InvalidCall, refuse_unknown
from common.calls.phone import row_digits, well_formed_e164
from common.calls.request import FIELDS, OutboundCall, RequestRules
from common.campaigns.csv_rows import CsvRow, RowError
from common.campaigns.model import (
    INVALID,
    RETRYABLE,
    WAITING_WINDOW,
    CampaignSpec,
    NewRecipient,
    Pacing,
    RetryPolicy,
)
from common.campaigns.windows import (
    RECIPIENT,
    CallingWindow,
    InvalidWindow,
    call_zones,
    fixed_all_year,
    given_zone,
    next_allowed,
    parse_window,
    recipient_zones,
    row_zone_problem,
    second_zone,
)
from common.config_store.model import instructions_text
from common.json_values import RepeatedKey, unique_keys
from common.text import quoted, shown_text, visible_name

MAX_NAME_CHARS = 200
MAX_RECIPIENTS = 100_000
CPS_RANGE = (0.01, 100.0)
CONCURRENT_RANGE = (1, 1000)
ATTEMPTS_RANGE = (1, 10)
# A retry's delay: at least a minute. A busy or unanswered number redialled sooner (0 was
# taken: up to 10 dials back to back) hounds its callee, and carriers flag the trunk as spam.
DELAY_RANGE = (60.0, 7 * 86400.0)
MAX_START_AHEAD_S = 365 * 86400.0
MAX_LISTED_ERRORS = 1000  # row errors listed in an answer (all are counted)
INVALID_ROWS = ("reject", "skip")
# An invalid row kept with `skip` keeps what was given, made safe and cut to these lengths.
MAX_SHOWN_NUMBER_CHARS = 64
MAX_SHOWN_ERROR_CHARS = 500
MAX_SHOWN_ZONES = 3  # a row's time zones named in its error
OPTION_KEYS = ("name", "defaults", "pacing", "window", "retry", "start_at", "invalid_rows")
_PROBE_NUMBER = "+14155550100"  # stands in for the rows' numbers when checking the defaults


@dataclass(frozen=True)
class CampaignOptions:
    name: str
    spec: CampaignSpec
    start_at: float | None
    skip_invalid: bool


@dataclass(frozen=True)
class ValidatedRows:
    recipients: list[NewRecipient]  # valid rows, and (with skip) the invalid ones as INVALID
    errors: list[RowError]
    valid: int


# ----------------------------------------------------------------------------- options


def parse_options(body: Mapping[str, Any], rules: RequestRules, now: float) -> CampaignOptions:
    """The campaign's options (every key but `recipients`); InvalidCall lists every problem."""
    errors: list[FieldError] = []
    name = _name(body.get("name"), errors)
    defaults = _defaults(body.get("defaults"), rules, errors)
    pacing = _pacing(body.get("pacing"), errors)
    window = _window(body.get("window"), errors)
    retry = _retry(body.get("retry"), errors)
    start_at = _start_at(body.get("start_at"), now, errors)
    invalid_rows = body.get("invalid_rows", "reject")
    if invalid_rows not in INVALID_ROWS:
        errors.append(FieldError("invalid_rows", 'must be "reject" or "skip"'))
    if errors:
        raise InvalidCall(errors)
    assert window is not None  # noqa: S101 - no errors: every part parsed
    return CampaignOptions(
        name=name,
        spec=CampaignSpec(defaults, pacing, window, retry),
        start_at=start_at,
        skip_invalid=invalid_rows == "skip",
    )


def _name(value: object, errors: list[FieldError]) -> str:
    """The campaign's name, held to the rules of a call's `name` (no control characters, valid
    Unicode, something visible): it is shown and logged like one. Stripped."""
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.append(FieldError("name", f"is required: 1 to {MAX_NAME_CHARS} characters"))
        return ""
    if not isinstance(value, str):
        errors.append(FieldError("name", f"must be a string of 1 to {MAX_NAME_CHARS} characters"))
        return ""
    if len(value) > MAX_NAME_CHARS:
        errors.append(
            FieldError("name", f"is {len(value)} characters long; at most {MAX_NAME_CHARS}")
        )
        return ""
    try:
        return visible_name(value, MAX_NAME_CHARS)
    except ValueError as exc:
        errors.append(FieldError("name", str(exc)))
        return ""


def _object(value: object, where: str, errors: list[FieldError]) -> dict[str, Any] | None:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(FieldError(where, "must be an object"))
        return None
    return value


def _defaults(value: object, rules: RequestRules, errors: list[FieldError]) -> dict[str, Any]:
    """The call fields every row starts from, checked once here (not once per row)."""
    defaults = _object(value, "defaults", errors)
    if defaults is None:
        return {}
    if "phone_number" in defaults:  # said, and the other fields still checked
        errors.append(FieldError("defaults.phone_number", "each recipient has its own number"))
    try:
        probe = rules.parse({**defaults, "phone_number": _PROBE_NUMBER})
    except InvalidCall as exc:
        errors.extend(
            FieldError(f"defaults.{e.field}", _hinted(e))
            for e in exc.errors
            if e.field != "phone_number"
        )
    else:
        defaults = _language_as_placed(defaults, probe.language)
    zone = given_zone(defaults.get("additional_params"))
    if zone is not None and (why := row_zone_problem(zone[1])) is not None:
        errors.append(FieldError(f"defaults.additional_params.{zone[0]}", why))
    if (keys := second_zone(defaults.get("additional_params"))) is not None:
        errors.append(FieldError(f"defaults.additional_params.{keys[1]}", _twice(keys[0])))
    return defaults


def _language_as_placed(fields: dict[str, Any], language: str) -> dict[str, Any]:
    """`fields` with a `language` given (as a tag, `es-MX`, or another code of it, `nb`)
    stored as the catalogue code it was read as (`es`, `no`): a row is parsed again as each
    of its calls is placed, by whichever server drives the campaign then, and on a database
    shared with a server of an earlier release (a rolling upgrade) that one took only the
    catalogue's codes: every row of a campaign accepted here was `invalid` there, nobody
    called."""
    if isinstance(fields.get("language"), str):
        return {**fields, "language": language}
    return fields


def _twice(first: str) -> str:
    return f"names the recipient's time zone, as {quoted(first)} does: keep one"


def _hinted(error: FieldError) -> str:
    """A call field's error, and where a time zone goes when one was given as a field: a
    row's `timezone` was "unknown field", with no word of additional_params.timezone."""
    if error.error == "unknown field" and given_zone({error.field: "x"}) is not None:
        return (
            "unknown field; a recipient's own time zone goes in additional_params.timezone,"
            " the campaign's in window.timezone"
        )
    return error.error


N = TypeVar("N", int, float)


def _bounded(
    value: object, where: str, bounds: tuple[N, N], default: N, errors: list[FieldError]
) -> N:
    """`value` within `bounds` (None: `default`), of the default's kind: a whole number for an
    int default, any number for a float one; else an error and the default."""
    if value is None:
        return default
    low, high = bounds
    whole = isinstance(default, int)
    if whole and isinstance(value, float) and value.is_integer():  # 10.0 (Python's json.dumps
        value = int(value)  # of a float, a query's "10.0"): whole, as a call's seconds take it
    kinds = int if whole else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = "a whole number" if whole else "a number"
        # {"calls_per_second": "2"} (a form builder's number): told only the range, which 2 is
        # in, its sender could not see what to change. (A query's numbers are numbers here.)
        numeric_text = isinstance(value, str) and not isinstance(_to_number(value), str)
        sent_as = ", a JSON number, not a string" if numeric_text else ""
        errors.append(FieldError(where, f"must be {what} from {low:g} to {high:g}{sent_as}"))
        return default
    return type(default)(value)


def _unknown(
    obj: dict[str, Any], where: str, known: Iterable[str], errors: list[FieldError]
) -> None:
    names = tuple(known)
    for key in obj:
        if key not in names:
            errors.append(
                FieldError(f"{where}.{key}", f"unknown field; expected {', '.join(names)}")
            )


def _pacing(value: object, errors: list[FieldError]) -> Pacing:
    obj = _object(value, "pacing", errors)
    if obj is None:
        return Pacing()
    _unknown(obj, "pacing", ("calls_per_second", "max_concurrent"), errors)
    default = Pacing()
    return Pacing(
        _bounded(
            obj.get("calls_per_second"),
            "pacing.calls_per_second",
            CPS_RANGE,
            default.calls_per_second,
            errors,
        ),
        _bounded(
            obj.get("max_concurrent"),
            "pacing.max_concurrent",
            CONCURRENT_RANGE,
            default.max_concurrent,
            errors,
        ),
    )


def _window(value: object, errors: list[FieldError]) -> CallingWindow | None:
    try:
        window = parse_window(value)
    except InvalidWindow as exc:
        errors.extend(
            FieldError("window" if name == "window" else f"window.{name}", message)
            for name, message in exc.errors
        )
        return None
    # Refused in a new campaign as in its rows (a stored campaign's window still reads):
    # hours read in EST end an hour later than Eastern time's in summer.
    if (fixed := fixed_all_year(window.timezone)) is not None:
        errors.append(FieldError("window.timezone", fixed))
        return None
    return window


def _retry(value: object, errors: list[FieldError]) -> RetryPolicy:
    obj = _object(value, "retry", errors)
    if obj is None:
        return RetryPolicy()
    _unknown(obj, "retry", ("on", "max_attempts", "delay_s"), errors)
    on = obj.get("on", list(RetryPolicy().on))
    valid_on = isinstance(on, list) and all(item in RETRYABLE for item in on)
    if not valid_on:
        errors.append(FieldError("retry.on", _retry_on_problem(on)))
        on = []
    default = RetryPolicy()
    # Retrying on nothing, a recipient has one attempt: shown as 3, it read as three.
    attempts = default.max_attempts if on else 1
    max_attempts = _bounded(
        obj.get("max_attempts"), "retry.max_attempts", ATTEMPTS_RANGE, attempts, errors
    )
    if not on and max_attempts > 1 and "on" in obj and valid_on:
        errors.append(
            FieldError("retry.max_attempts", "is more than 1, but retry.on names no status")
        )
    delay = obj.get("delay_s")
    if _sooner_than_allowed(delay):
        errors.append(
            FieldError(
                "retry.delay_s",
                f"must be at least {DELAY_RANGE[0]:g} (seconds): a busy or unanswered number"
                " redialled sooner hounds its callee, and carriers flag the trunk as spam",
            )
        )
        delay = None
    return RetryPolicy(
        tuple(dict.fromkeys(on)),
        max_attempts,
        _bounded(delay, "retry.delay_s", DELAY_RANGE, default.delay_s, errors),
    )


# What is written between a status's words ("no-answer", "No Answer", "noanswer"): a value is
# compared without it.
_STATUS_SEPARATORS = re.compile(r"[\s_-]+")


def _retry_on_problem(on: object) -> str:
    """Why `retry.on` is refused: the first value that is no status retried, named (with the
    status meant, when only its case or the separator between its words differ), before the
    list of them: `["busy", "no-answer"]` was told "must be a list of busy, no_answer, ...",
    which named neither the value nor what to write instead."""
    statuses = f"must be a list of {', '.join(RETRYABLE)}"
    if not isinstance(on, list):
        return statuses
    wrong = next(item for item in on if item not in RETRYABLE)
    if isinstance(wrong, str):
        unspaced = {status.replace("_", ""): status for status in RETRYABLE}
        meant = unspaced.get(_STATUS_SEPARATORS.sub("", wrong).lower())
        if meant is not None:
            return f"{statuses}; {quoted(wrong)} is written {meant!r}"
    return f"{statuses}; {quoted(wrong)} is none of them"


def _sooner_than_allowed(delay: object) -> bool:
    """A delay given as a number from 0 up to below the minimum (told so, not the range)."""
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        return False
    return 0 <= delay < DELAY_RANGE[0]


def _start_at(value: object, now: float, errors: list[FieldError]) -> float | None:
    if value is None:
        return None
    problem = "must be an ISO-8601 time with a UTC offset, e.g. 2026-12-24T09:00:00Z"
    if not isinstance(value, str):
        errors.append(FieldError("start_at", problem))
        return None
    # RFC 3339 lets the zone be a lower-case z, which fromisoformat does not read; and a leap
    # second (23:59:60 UTC), which fromisoformat refuses: read as the second after 23:59:59,
    # as POSIX time counts it.
    text = value[:-1] + "Z" if value.endswith("z") else value
    text, leap = _LEAP_SECOND.subn(r"\g<1>59", text, count=1)
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        errors.append(FieldError("start_at", problem))
        return None
    if stamp.utcoffset() is None:
        errors.append(FieldError("start_at", problem))
        return None
    if leap and _utc_time(stamp) != "23:59:59":
        errors.append(
            FieldError("start_at", "has second 60, a leap second, which only 23:59:60 UTC has")
        )
        return None
    at = stamp.timestamp() + leap
    if at > now + MAX_START_AHEAD_S:
        errors.append(FieldError("start_at", "must be within a year"))
    return at


def _utc_time(stamp: dt.datetime) -> str | None:
    """HH:MM:SS of `stamp` in UTC; None when UTC falls outside the years datetime holds (a
    time on 9999-12-31 behind UTC, on 0001-01-01 ahead of it): no leap second's, and read
    there it raised OverflowError, a 500 for the client's own value."""
    try:
        return stamp.astimezone(dt.UTC).strftime("%H:%M:%S")
    except OverflowError:
        return None


_LEAP_SECOND = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2}.[0-9]{2}:[0-9]{2}:)60(?=[.,Z+-]|$)")
_SPACED_OFFSET = re.compile(r"(T[0-9:.]+) ([0-9]{2}(?::?[0-9]{2})?)$")


def _plus_restored(value: str) -> str:
    """A `start_at` whose offset's `+` a query string turned into a space (`...09:00:00
    09:00`, from an unencoded `+09:00`): the `+` it was."""
    return _SPACED_OFFSET.sub(r"\1+\2", value)


def options_from_query(query: Mapping[str, str]) -> dict[str, Any]:
    """CSV uploads carry their options in the query: `options=<the JSON options>`, or one
    parameter each (name, invalid_rows, start_at, calls_per_second, max_concurrent,
    window_start, window_end, window_days=mon,tue, timezone, retry_on=busy,no_answer,
    max_attempts, delay_s). Values are parsed as the JSON body's would be. A parameter or an
    option that is none of these is refused (a typo must not be dropped silently). An empty
    one is not given (a form's blank field, a generated client's unset parameter), but for
    `retry_on=`, retrying on nothing (as `"on": []`)."""
    unknown = [key for key in query if key not in QUERY_PARAMS]
    if unknown:
        expected = ", ".join(QUERY_PARAMS)
        raise InvalidCall(
            [FieldError(key, f"unknown query parameter; expected {expected}") for key in unknown]
        )
    # An upload form's blank `timezone` was "unknown time zone ''", its blank `start_at` "must
    # be an ISO-8601 time", each a 422 for a field nobody filled in.
    query = {key: value for key, value in query.items() if value or key == "retry_on"}
    options: dict[str, Any] = {}
    if "options" in query:
        try:
            decoded = json.loads(query["options"], object_pairs_hook=unique_keys)
        except RepeatedKey as exc:
            raise InvalidCall([FieldError("options", str(exc))]) from None
        except ValueError:
            raise InvalidCall([FieldError("options", "must be a JSON object")]) from None
        except RecursionError:  # e.g. 5,000 "[" fit in a query string
            raise InvalidCall(
                [FieldError("options", "must be a JSON object: nested too deeply")]
            ) from None
        if not isinstance(decoded, dict):
            raise InvalidCall([FieldError("options", "must be a JSON object")])
        options.update(known_options(decoded))
    given_twice = [key for key in _TOP_PARAMS if key in query and key in options]
    given_twice += [  # a section options= gave as other than an object took the parameter too
        param
        for param, (section, key, _convert) in _SECTION_PARAMS.items()
        if param in query
        and section in options
        and (not isinstance(options[section], dict) or key in options[section])
    ]
    if given_twice:  # the parameter won: an options= value was dropped without a word
        raise InvalidCall(
            [FieldError(p, "is given both in options= and as a parameter") for p in given_twice]
        )
    for key in _TOP_PARAMS:
        if key in query:
            options[key] = query[key]
    if isinstance(options.get("start_at"), str) and "start_at" in query:
        options["start_at"] = _plus_restored(options["start_at"])
    for param, (section, key, convert) in _SECTION_PARAMS.items():
        if param in query:
            part = options.setdefault(section, {})
            if isinstance(part, dict):
                part[key] = convert(query[param])
    return options


def merged_options(query: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """The parameters' options (query, form fields) and a multipart `options` part's, which
    must not name the same option (or section: a part's `pacing` replaced the query's whole,
    dropping its calls_per_second)."""
    both = [key for key in part if key in query]
    if both:
        why = "is given both as a parameter (query or form field) and in the options part"
        raise InvalidCall([FieldError(key, why) for key in both])
    return query | known_options(part)


def known_options(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` (options given apart from a JSON body: `options=`, a multipart part), refused
    (422) if it holds a key that is not an option, as the JSON body would be."""
    refuse_unknown(doc, OPTION_KEYS, "options.")
    return doc


# A JSON number (RFC 8259): float() also read `1_0` (10), ` 6 `, `nan` and other scripts'
# digits, so `max_attempts=1_0` called each person up to 10 times where the JSON body's
# "1_0" was refused.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _to_number(text: str) -> object:
    """A query's number as the JSON body's would be read; else the text, refused with the
    field's own message."""
    if _JSON_NUMBER.fullmatch(text) is None:
        return text
    number = float(text)
    return int(number) if number.is_integer() and "." not in text else number


def _to_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_TOP_PARAMS = ("name", "invalid_rows", "start_at")
_SECTION_PARAMS: dict[str, tuple[str, str, Callable[[str], object]]] = {
    "calls_per_second": ("pacing", "calls_per_second", _to_number),
    "max_concurrent": ("pacing", "max_concurrent", _to_number),
    "window_start": ("window", "start", str),
    "window_end": ("window", "end", str),
    "window_days": ("window", "days", _to_list),
    "timezone": ("window", "timezone", str),
    "retry_on": ("retry", "on", _to_list),
    "max_attempts": ("retry", "max_attempts", _to_number),
    "delay_s": ("retry", "delay_s", _to_number),
}
QUERY_PARAMS = ("options", *_TOP_PARAMS, *_SECTION_PARAMS)


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Row:
    """One recipient as given: its number for the user (`row_number`), where its fields are
    named in error details (`prefix`), and its call fields."""

    row_number: int
    prefix: str
    fields: dict[str, Any]
    problems: tuple[RowError, ...] = ()  # found as it was read (a CSV's row refused)


def json_rows(recipients: object) -> Iterator[Row]:
    """`recipients` of a JSON body (checked to be a list by the caller)."""
    assert isinstance(recipients, list)  # noqa: S101
    for index, item in enumerate(recipients):
        yield Row(index, f"recipients[{index}].", item if isinstance(item, dict) else {"": item})


def csv_rows(rows: Iterable[CsvRow], refused: Iterable[CsvRow] = ()) -> Iterator[Row]:
    """A CSV's rows in their order: the usable ones, and those refused as they were read
    (kept, with invalid_rows=skip, as the invalid recipients they are)."""
    for row in heapq.merge(rows, refused, key=lambda row: row.number):
        fields: dict[str, Any] = {k: v for k, v in row.fields.items() if v is not None}
        if row.additional_params:
            # Not copied: a copy held each row's other columns twice until the campaign was
            # stored (54,548 rows of 598 cells, 13 KB each as a dict: 1.58 GB, 1.18 once).
            fields["additional_params"] = row.additional_params
        yield Row(row.number, "", fields, row.errors)


def merged(defaults: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """A row's call body: its fields over the defaults (additional_params merged key by key).
    A row's null is a field not given, as in a single call's body: the default holds (as it
    does under a CSV's blank cell). So is a blank instruction, which a single call takes for
    none given (the default instructions): over the campaign's, a JSON row's `""` (a
    spreadsheet's empty cell) had its callee called with "You are a helpful assistant.", the
    campaign's instructions dropped without a word."""
    body = {**defaults, **{k: v for k, v in fields.items() if _given(k, v)}}
    if isinstance(defaults.get("additional_params"), dict) and isinstance(
        fields.get("additional_params"), dict
    ):
        body["additional_params"] = {
            **defaults["additional_params"],
            **fields["additional_params"],
        }
    return body


def _given(field: str, value: object) -> bool:
    """Whether a row gives `field` (to hold over the campaign's default)."""
    if value is None:
        return False
    if field != "dynamic_instruction":
        return True
    try:
        return instructions_text(value) is not None
    except ValueError:  # no text (a number, a NUL): given, to be refused as the call's would
        return True


class RowChecker:
    """Validates rows one by one (the caller may yield to the event loop between chunks)."""

    def __init__(
        self, spec: CampaignSpec, rules: RequestRules, start: float, *, enforce_hours: bool
    ) -> None:
        """`start`: when the campaign starts (its start_at, or now), from which each row's
        window is read."""
        self._spec = spec
        self._rules = rules
        self._enforce_hours = enforce_hours
        self._start_utc = dt.datetime.fromtimestamp(start, dt.UTC)
        # A number given twice is refused in the later row once every row is read and found
        # valid or not (`drop_repeats`): the first valid row of each number (recipient idx),
        # and the later valid rows of a number given before, in their order (idx, where the
        # row names its fields). Each valid row's (idx, prefix) kept whole, 150 bytes a row,
        # added 6 MB to a 50,000-row campaign's creation.
        self._first_of: dict[str, int] = {}
        self._repeats: list[tuple[int, str]] = []
        # When a number's window first opens, or why it never does, by its zones: a number
        # never inside it searched two weeks twice, each row anew (a list of them, refused,
        # cost twice a list of valid ones). Bounded by the zone sets phonenumbers knows.
        self._opens_in: dict[tuple[str, ...], dt.datetime | str] = {}
        self.recipients: list[NewRecipient] = []
        self.errors: list[RowError] = []
        self.valid = 0
        # Valid rows with a webhook_url of their own: (recipient idx, where the row names its
        # fields, the URL); their hosts are resolved once all rows are read (`refuse` ends
        # those that do not pass).
        self.row_webhooks: list[tuple[int, str, str]] = []

    def check(self, row: Row, *, keep_invalid: bool) -> None:
        idx = len(self.recipients)
        problems = self._problems(row)
        if not problems:
            call, fields = self._call, self._fields
            opens = self._opens
            # A row whose window is closed at the start waits for it from the first (as the
            # scheduler would make it a moment later): pending, the campaign answered 201
            # with its next call now, while the first came hours later.
            recipient = NewRecipient(idx, row.row_number, call.phone_number, fields)
            if opens > self._start_utc:  # (datetimes: the start's float rounds to a µs)
                recipient = replace(recipient, state=WAITING_WINDOW, next_at=opens.timestamp())
            self.recipients.append(recipient)
            if self._first_of.setdefault(call.phone_number, idx) != idx:
                self._repeats.append((idx, row.prefix))
            self.valid += 1
            if isinstance(fields.get("webhook_url"), str) and call.webhook_url:
                self.row_webhooks.append((idx, row.prefix, call.webhook_url))
            return
        self.errors.extend(problems)
        if keep_invalid:
            number = _given_number(row.fields.get("phone_number"))
            self.recipients.append(_invalid(idx, row.row_number, number, problems))

    def refuse(self, idx: int, problem: RowError) -> None:
        """A valid row found invalid after all (its webhook_url's host did not pass)."""
        kept = self.recipients[idx]
        self.recipients[idx] = _invalid(idx, kept.row_number, kept.phone_number, [problem])
        self.errors.append(problem)
        self.valid -= 1

    def drop_repeats(self) -> Iterator[None]:
        """Refuse each valid row whose number an earlier valid row calls ("repeats row 2"),
        once every row was checked and each webhook_url host resolved (`refuse`); yields
        after each row, for the caller to take turns. Refused as each row was read, a repeat
        of a row refused only then (its webhook_url's host not public, or its window never
        open in its own time zone) left its number called by none of its rows, while a row
        refused for its language left the next one of its number called."""
        holders: dict[str, int] = {}  # a number's first row still valid: its row number
        for idx, prefix in self._repeats:
            kept = self.recipients[idx]
            if kept.state != INVALID:
                number = kept.phone_number
                if number not in holders:
                    first = self.recipients[self._first_of[number]]
                    valid = first.state != INVALID
                    holders[number] = first.row_number if valid else kept.row_number
                if (holder := holders[number]) != kept.row_number:
                    problem = RowError(
                        kept.row_number, f"{prefix}phone_number", f"repeats row {holder}"
                    )
                    self.refuse(idx, problem)
            yield

    def _problems(self, row: Row) -> list[RowError]:
        if row.problems:
            return list(row.problems)
        if "" in row.fields:
            return [RowError(row.row_number, row.prefix.rstrip(".") or "row", "must be an object")]
        # The row's own time zone (a CSV's `timezone` column, a JSON row's
        # additional_params.timezone), in which its calling hours are read too.
        zone = given_zone(row.fields.get("additional_params"))
        zone_errors = []
        if zone is not None and (why := row_zone_problem(zone[1])) is not None:
            where = f"{row.prefix}additional_params.{zone[0]}" if row.prefix else zone[0]
            zone_errors.append(RowError(row.row_number, where, why))
        # (a CSV's header naming two was refused as a whole)
        if row.prefix and (keys := second_zone(row.fields.get("additional_params"))):
            where = f"{row.prefix}additional_params.{keys[1]}"
            zone_errors.append(RowError(row.row_number, where, _twice(keys[0])))
        try:
            call = self._rules.parse(merged(self._spec.defaults, row.fields))
        except InvalidCall as exc:
            return [
                RowError(row.row_number, row.prefix + e.field, _hinted(e)) for e in exc.errors
            ] + zone_errors
        if zone_errors:
            return zone_errors
        opens = self._opens_at(
            call_zones(
                call.phone_number,
                row.fields.get("additional_params"),
                self._spec.defaults.get("additional_params"),
            )
        )
        if isinstance(opens, str):
            return [self._never_open(row, call.phone_number, opens)]
        self._opens = opens
        self._call = call
        fields = {k: v for k, v in row.fields.items() if k in FIELDS}
        self._fields = _language_as_placed(fields, call.language)
        self._fields.pop("phone_number", None)
        return []

    def _never_open(self, row: Row, number: str, why: str) -> RowError:
        """The refusal of a row whose window never opens: its number's, or its own time zone's
        when the number's zones alone open (a London number said to be in Sydney was refused
        as "phone_number: is never inside the calling window in its time zones (Europe/
        Guernsey, Europe/Isle_of_Man, Europe/Jersey and 2 more)", Sydney not named)."""
        own = given_zone(row.fields.get("additional_params"))
        zone = own or given_zone(self._spec.defaults.get("additional_params"))
        zones = recipient_zones(number)
        if zone is None or zone[1] in zones or isinstance(self._opens_at(zones), str):
            return RowError(row.row_number, f"{row.prefix}phone_number", why)
        if own is None:
            where = f"defaults.additional_params.{zone[0]}"
        else:
            where = f"{row.prefix}additional_params.{zone[0]}" if row.prefix else zone[0]
        return RowError(
            row.row_number,
            where,
            f"the calling window is never open in {zone[1]} and in its number's time zones"
            f" ({shown_zones(zones)}) at once: a recipient's own time zone narrows its"
            " number's hours, it never widens them",
        )

    def _opens_at(self, zones: tuple[str, ...]) -> dt.datetime | str:
        """When the window of a row in these zones is first open from the start, or why it
        never is."""
        found = self._opens_in.get(zones)
        if found is None:  # the same for every number of these zones: worked out once
            found = self._opens_in[zones] = self._first_open(zones)
        return found

    def _first_open(self, zones: tuple[str, ...]) -> dt.datetime | str:
        window = self._spec.window
        if window.timezone == RECIPIENT and not zones:
            return "no time zone is known for this number; name one in window.timezone"
        opens = next_allowed(
            self._start_utc, window, zones, enforce_calling_hours=self._enforce_hours
        )
        if opens is not None:
            return opens
        return never_open(self._start_utc, window, zones, enforce_hours=self._enforce_hours)

    _call: OutboundCall
    _fields: dict[str, Any]
    _opens: dt.datetime


def shown_zones(zones: tuple[str, ...]) -> str:
    """`zones` as a message lists them: the first MAX_SHOWN_ZONES, and how many more."""
    shown = ", ".join(zones[:MAX_SHOWN_ZONES])
    if len(zones) > MAX_SHOWN_ZONES:  # a number of the whole country's: +1's 42 zones were
        # each row's message, 900 bytes, and a list of them refused with 900 KB of answer
        shown += f" and {len(zones) - MAX_SHOWN_ZONES} more"
    return shown


def never_open(
    at: dt.datetime, window: CallingWindow, zones: tuple[str, ...], *, enforce_hours: bool
) -> str:
    """Why a number whose window `next_allowed` finds never open from `at` is never called."""
    if window.timezone == RECIPIENT and not zones:
        return "no time zone is known for this number; name one in window.timezone"
    why = f"is never inside the calling window in its time zones ({shown_zones(zones)})"
    if enforce_hours and next_allowed(
        at, window, zones, enforce_calling_hours=False
    ):  # the window opens, but only outside 08:00-21:00 there
        why += ": calls are kept within 08:00-21:00 local time (CAMPAIGN_ENFORCE_CALLING_HOURS)"
    return why


def _invalid(idx: int, row_number: int, number: str, problems: list[RowError]) -> NewRecipient:
    """An invalid row kept (invalid_rows=skip): state `invalid`, its problems in `errors`."""
    errors = [
        {
            "field": shown_text(e.field, MAX_SHOWN_ERROR_CHARS),
            "error": shown_text(e.error, MAX_SHOWN_ERROR_CHARS),
        }
        for e in problems
    ]
    return NewRecipient(idx, row_number, number, {}, state=INVALID, errors=errors)


def _given_number(value: object) -> str:
    """An invalid row's number as it is kept (state `invalid`), for a user to find the row:
    the text given, with what no store can hold replaced (a lone surrogate cannot be encoded,
    PostgreSQL's text cannot hold a NUL) and clipped; "" when it is not text at all, or holds
    a letter: no number, but a name from a column shifted ("Ann Lee-Marsh"), personal data
    kept that no erasure by number could find (the row is found by its row number)."""
    if not isinstance(value, str) or any(c.isalpha() for c in value):
        return ""
    # A number refused for another field (a language 'Bob Ray' from a column shifted, which
    # its error quotes) is kept as an erasure of it finds it: "+1 415 555 0132" as written
    # was found by no erasure of +14155550132, and its error kept that name for good; so was
    # "+999 555 0100 22" (no country's, refused for that too) by one of itself.
    number = well_formed_e164(value)
    if number is None:
        # And one without its "+" (a spreadsheet's "1 415 555 0123", an international
        # prefix's "001 415 555 0123", a national "(415) 555-0123"), as its digits: kept as
        # written, no erasure of +14155550123 found it, nor the name its errors quoted.
        number = row_digits(value)
    return number if number is not None else shown_text(value, MAX_SHOWN_NUMBER_CHARS)


def invalid_rows_answer(errors: list[RowError]) -> dict[str, Any]:
    """What a created campaign's answer says of the rows skipped."""
    return {"invalid_row_count": rows_of(errors), "invalid_rows": listed(errors)}


def rows_of(errors: list[RowError]) -> int:
    """How many rows `errors` are about: a row refused for its language and its emotion is
    one row skipped (two errors), as the campaign's `counts.invalid` has it."""
    return len({e.row for e in errors})


def listed(errors: list[RowError]) -> list[dict[str, Any]]:
    """Row errors as answer details (the first MAX_LISTED_ERRORS of them)."""
    return [_shown(e) for e in errors[:MAX_LISTED_ERRORS]]


def refused(errors: list[RowError]) -> Sequence[dict[str, Any]]:
    """Row errors as an error answer's details: all of them, which the answer lists up to its
    cap and then counts ("and N more", handlers/errors.py json_error), as every error does.
    Each is made as it is read: the answer reads the first thousand, and making all 100,000
    of a refused list held the loop for 100 ms at its end (every other request waiting)."""
    return _Details(errors)


class _Details(Sequence[dict[str, Any]]):
    """Row errors as details, each made when it is read."""

    def __init__(self, errors: list[RowError]) -> None:
        self._errors = errors

    def __len__(self) -> int:
        return len(self._errors)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [_shown(e) for e in self._errors[index]]
        return _shown(self._errors[index])


def _shown(error: RowError) -> dict[str, Any]:
    """A row error as an answer lists it, its texts cut as a kept invalid row's are: a
    message quoting the row's value (an unknown language, 50 KB long) came back whole in
    each of a thousand details, a 64 MiB list answered with as much, and stored with it."""
    return {
        "row": error.row,
        "field": shown_text(error.field, MAX_SHOWN_ERROR_CHARS),
        "error": shown_text(error.error, MAX_SHOWN_ERROR_CHARS),
    }
