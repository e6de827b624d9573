"""When a campaign may call a recipient: calling windows, recipient time zones, TCPA floor.

A `CallingWindow` is a daily local-time range on some weekdays, read either in the
recipient's own time zone(s) (`timezone="recipient"`) or in one named IANA zone. A call is
allowed at an instant when the window holds in EVERY zone that applies: a number whose
prefix spans several zones (a US toll-free number, a Russian or Australian mobile) is only
called when it is a decent hour everywhere it might ring.

With `enforce_calling_hours=True` the TCPA floor also applies: never before 08:00 nor at or
after 21:00 in the recipient's local time, whatever the window says. The floor is always
read in the recipient's zones, even when the window names another zone (the window is the
campaign's business hours; the floor protects the person called).

Unknown zones. `recipient_zones` returns the number's zones; for a number phonenumbers
cannot classify (well-formed but not valid in its metadata, which `normalize_phone` still
accepts) it returns every zone of the number's country calling code, the strictest reading;
it returns `()` only when not even the country has zone data (non-geographic codes such as
+800 or +888, or an unparsable string). Then:
  * `timezone="recipient"`: nothing is known to check, so `next_allowed` returns None
    ("never callable"): the caller skips the row and reports it, rather than guess.
  * a named zone: the window is read there and, if enforcing, so is the floor (the
    campaign said where its recipients are).

Algorithm. Per zone, the UTC offset is piecewise constant; within each constant stretch
the allowed set for one local date is a single interval, so gaps (spring forward) and
repeated hours (fall back) come out exactly, with no minute scanning. The per-zone interval
lists are intersected across zones. Results are cached per (zones, window, UTC day), so a
campaign of 100,000 rows costs a handful of zone computations plus a bisect per row.
"""

from __future__ import annotations

import os
import re
import unicodedata
import zoneinfo
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo, available_timezones

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as pn_timezone
from phonenumbers.tzdata import TIMEZONE_DATA

from common.text import quoted

RECIPIENT = "recipient"
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALL_DAYS = frozenset(range(7))
DEFAULT_START = time(9, 0)
DEFAULT_END = time(20, 0)
# A window's end of 24:00 (ISO 8601's end of the day: a window calling until midnight) is
# held as 00:00, which no other end can be (it would come before any start).
END_OF_DAY = time(0, 0)
# TCPA: no telephone solicitation before 8 a.m. or after 9 p.m. at the called party's location.
CALLING_HOURS_START = time(8, 0)
CALLING_HOURS_END = time(21, 0)
# How far ahead next_allowed looks before it declares a window never open: a week and a day
# was not enough for a one-day-a-week window whose hours the clocks skip once (spring
# forward): that day it does not exist, and it opens two weeks on.
HORIZON = timedelta(days=15)

_DAY_S = 86_400
_HORIZON_S = int(HORIZON.total_seconds())
_SPAN_DAYS = HORIZON.days + 2  # computed range: whole UTC days covering [now, now + HORIZON]
_PROBE_S = 6 * 3600  # offset sampling step; zones never change offset twice within 6 hours
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_WINDOW_KEYS = ("start", "end", "days", "timezone")
_NOT_PLACES = frozenset({"localtime", "Factory"})  # files in TZPATH that name no place

Interval = tuple[int, int]  # [start, end) in POSIX seconds


# ------------------------------------------------------------------ the zone rules

_TZ_VERSION = re.compile(r"# version ([0-9]{4}[a-z]+)")


_TZ_RELEASE = re.compile(r"[0-9]{4}[a-z]+")


def system_tz_version(tzpath: Sequence[str]) -> str | None:
    """The release of the first system time zone database in `tzpath` (as its tzdata.zi
    says, or its +VERSION), or None when there is none or it does not say."""
    for directory in tzpath:
        for name, pattern in (("tzdata.zi", _TZ_VERSION), ("+VERSION", _TZ_RELEASE)):
            try:
                with (Path(directory) / name).open(encoding="ascii", errors="replace") as f:
                    first = f.readline().strip()
            except OSError:
                continue
            match = pattern.fullmatch(first)
            return match[1 if pattern is _TZ_VERSION else 0] if match else None
    return None


def packaged_tz_version() -> str | None:
    """The release of the tzdata package's database (None without the package)."""
    try:
        return system_tz_version([str(resources.files("tzdata") / "zoneinfo")])
    except ModuleNotFoundError:
        return None


def use_newest_zone_rules() -> None:
    """zoneinfo reads the system's time zone files first, and the tzdata package (installed
    with this project) only for a zone the system lacks. When the package is the newer
    release (the system's was not updated), zones whose rules changed in between (British
    Columbia's permanent UTC-7, Morocco's) were read an hour off, and calls placed at 07:00
    or 21:30 local time: then the package alone is read. (Versions compare as text: "2025b"
    < "2026f".)"""
    if os.environ.get("PYTHONTZPATH"):  # the operator chose the database: theirs it is
        return
    packaged = packaged_tz_version()
    system = system_tz_version(zoneinfo.TZPATH)
    if packaged is None or (system is not None and system >= packaged):
        return
    zoneinfo.reset_tzpath(to=[])
    ZoneInfo.clear_cache()
    _zone_names.cache_clear()
    recipient_zones.cache_clear()
    _zone_intervals.cache_clear()
    _open_intervals.cache_clear()


# ------------------------------------------------------------------ the window


class InvalidWindow(ValueError):
    """A window object refused, with every problem as (field, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{name}: {error}" for name, error in errors))
        self.errors = errors


@dataclass(frozen=True)
class CallingWindow:
    """Local times [start, end) on `days` (0=Mon..6=Sun), read in `timezone`: "recipient"
    (the number's own zones) or an IANA zone name. An `end` of END_OF_DAY (00:00) is 24:00."""

    start: time = DEFAULT_START
    end: time = DEFAULT_END
    days: frozenset[int] = field(default=ALL_DAYS)
    timezone: str = RECIPIENT

    def __post_init__(self) -> None:
        """Refuse windows that parse_window would refuse, so a hand-built one is as safe."""
        for value in (self.start, self.end):
            if value.tzinfo is not None or value.microsecond:
                raise ValueError("window times must be naive and whole seconds")
        if self.end != END_OF_DAY and self.start >= self.end:
            raise ValueError("window start must be before its end")
        if not self.days or not self.days <= ALL_DAYS:
            raise ValueError("window days must be a non-empty subset of 0..6")
        if self.timezone != RECIPIENT and not is_zone(self.timezone):
            raise ValueError(f"unknown time zone {self.timezone!r}")


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    """The IANA names zoneinfo can load, read once: a whitelist, so that user text never
    reaches the filesystem lookup and names like "zone.tab" or "../x" never load."""
    return frozenset(available_timezones()) - _NOT_PLACES


@lru_cache(maxsize=1)
def _zones_by_spelling() -> dict[str, str]:
    names: dict[str, str] = {}
    for name in sorted(_zone_names()):
        names.setdefault(_spelling(name), name)
    return names


# IANA names write a place's words apart with `_` ("America/New_York"); people with spaces,
# and around the `/` too ("America / New York"), which got no hint.
def _spelling(name: str) -> str:
    """`name` lower-cased, its words apart by one `_`, no space around a `/`."""
    parts = ("_".join(part.replace("_", " ").split()) for part in name.split("/"))
    return "/".join(parts).lower()


def zone_spelled(value: str) -> str | None:
    """The zone `value` names in another case ("europe/madrid") or with spaces for its `_`
    ("America/New York"), if any: one lookup, where lower-casing the value once per zone took
    5 s for a 5 MB time zone in a window (none is over 32 characters: one past 100 is none,
    with spaces or not, and is not looked at)."""
    return None if len(value) > 100 else _zones_by_spelling().get(_spelling(value))


def is_zone(name: str) -> bool:
    """True for a loadable IANA zone name (case-sensitive, as zoneinfo is)."""
    return name in _zone_names()


def parse_window(obj: object) -> CallingWindow:
    """The JSON shape `{"start": "09:00", "end": "20:00", "days": ["mon", ...],
    "timezone": "recipient" | "Europe/Madrid"}` into a CallingWindow.

    Every key is optional (defaults: 09:00-20:00, all days, "recipient"); None means all
    defaults. Unknown keys are refused, since a misspelt key would otherwise silently fall
    back to a default window. Raises InvalidWindow (a ValueError) listing every problem.
    """
    if obj is None:
        return CallingWindow()
    if not isinstance(obj, dict):
        raise InvalidWindow([("window", "must be an object")])
    errors: list[tuple[str, str]] = []
    for key in obj:
        if key not in _WINDOW_KEYS:
            errors.append((str(key), f"unknown field; expected one of {', '.join(_WINDOW_KEYS)}"))
    start = _parse_hh_mm(obj.get("start"), "start", DEFAULT_START, errors)
    end_value = obj.get("end")
    if end_value == "24:00":  # ISO 8601's end of the day: calls until midnight
        end: time | None = END_OF_DAY
    else:
        end = _parse_hh_mm(end_value, "end", DEFAULT_END, errors)
        if start is not None and end is not None and start >= end:
            errors.append(
                (
                    "end",
                    f"must be after start ({start:%H:%M}); windows cannot span midnight"
                    " (24:00 ends one at midnight)",
                )
            )
    days = _parse_days(obj.get("days"), errors)
    timezone = _parse_timezone(obj.get("timezone"), errors)
    if errors or start is None or end is None or days is None or timezone is None:
        raise InvalidWindow(errors)
    return CallingWindow(start, end, days, timezone)


def _parse_hh_mm(
    value: object, name: str, default: time, errors: list[tuple[str, str]]
) -> time | None:
    if value is None:
        return default
    if not isinstance(value, str) or not (match := _HH_MM.fullmatch(value)):
        hint = " (24:00 only as a window's end)" if value == "24:00" else ""
        errors.append(
            (name, f"must be HH:MM on a 24-hour clock, e.g. 09:00; got {quoted(value)}{hint}")
        )
        return None
    return time(int(match[1]), int(match[2]))


def _parse_days(value: object, errors: list[tuple[str, str]]) -> frozenset[int] | None:
    if value is None:
        return ALL_DAYS
    if not isinstance(value, list):
        errors.append(("days", 'must be a list of day names, e.g. ["mon", "tue"]'))
        return None
    if not value:
        errors.append(("days", "must name at least one day"))
        return None
    days: set[int] = set()
    ok = True
    for i, item in enumerate(value):
        name = item.strip().lower() if isinstance(item, str) else None
        if name not in DAY_NAMES:
            errors.append((f"days[{i}]", f"unknown day {quoted(item)}; use {', '.join(DAY_NAMES)}"))
            ok = False
        else:
            days.add(DAY_NAMES.index(name))
    return frozenset(days) if ok else None


def _parse_timezone(value: object, errors: list[tuple[str, str]]) -> str | None:
    if value is None:
        return RECIPIENT
    if not isinstance(value, str):
        errors.append(("timezone", '"recipient" or an IANA zone name such as "Europe/Madrid"'))
        return None
    if value == RECIPIENT or is_zone(value):
        return value
    hint = zone_meant(value)
    message = f"unknown time zone {quoted(value)}"
    message += f"; did you mean {hint!r}?" if hint else '; use "recipient" or an IANA name'
    errors.append(("timezone", message))
    return None


# ------------------------------------------------------------------ recipient zones


@lru_cache(maxsize=8192)
def recipient_zones(e164: str) -> tuple[str, ...]:
    """The IANA zones the number may ring in (see the module docstring on unknown zones).

    A zone that zoneinfo cannot load is dropped rather than failing every later check; a
    test keeps phonenumbers' zone names and the installed tzdata in step, so none is.

    Kept for the last 8,192 numbers (a number's zones do not change while the process
    runs): GET /campaigns?limit=1000 asked them for each campaign's next recipient on every
    page, 0.2 ms each on the event loop.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    # The number's type, asked once: time_zones_for_number asks it, and an unknown zone's
    # cause was asked again, each a walk over the country code's regions (+1's 25 for an
    # invalid number), a third of an invalid row's check.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        # Invalid per the metadata (a new range, say): the whole country, the strictest.
        zones = TIMEZONE_DATA.get(str(number.country_code), ())
    elif phonenumbers.is_number_type_geographical(kind, number.country_code or 0):
        zones = pn_timezone.time_zones_for_geographical_number(number)
    else:  # toll-free, say: the country's zones (time_zones_for_number's own answer)
        zones = pn_timezone.time_zones_for_number(number)
    return tuple(z for z in zones if z != pn_timezone.UNKNOWN_TIMEZONE and is_zone(z))


ROW_ZONE = "timezone"  # a recipient's own zone: its additional_params key (a CSV column)


_ZONE_KEY_SEPARATORS = re.compile(r"[\s_.-]+")


def is_zone_key(key: object) -> bool:
    """Whether an additional_params key names a recipient's own zone: `timezone` in any case
    and spelling of the two words, as a spreadsheet writes it (NFKC: full-width letters), with
    invisible characters (a BOM or zero-width space pasted into a header cell) not counted:
    such a column went to the agent alone and the hours were read in the number's zones."""
    if not isinstance(key, str):
        return False
    if not key.isascii():  # (no ASCII character is invisible: the usual header's cost alone)
        key = "".join(
            c for c in unicodedata.normalize("NFKC", key) if unicodedata.category(c) != "Cf"
        )
    return _ZONE_KEY_SEPARATORS.sub("", key.lower()) == ROW_ZONE


def given_zone(*params: object) -> tuple[str, object] | None:
    """The first `timezone` of these additional_params objects, as (its key, its value), a
    blank one being none; None when none gives one. The key in any case and spelling of the
    two words ("TimeZone", "time_zone", "Time Zone": a spreadsheet's header), since a zone
    meant for the calling hours and not read there is a call at 07:00 where the person is."""
    for given in params:
        if not isinstance(given, dict):
            continue
        for key, value in given.items():
            if is_zone_key(key):
                if value is None or (isinstance(value, str) and not value.strip()):
                    break
                return key, value
    return None


def second_zone(params: object) -> tuple[str, str] | None:
    """Of an additional_params object giving the recipient's own zone under two keys
    ("timezone" and "time_zone", a CRM record's both), (the first key, the second): one is
    read for the calling hours, the other went to the agent alone, unchecked."""
    if not isinstance(params, dict):
        return None
    given = [
        key
        for key, value in params.items()
        if is_zone_key(key) and value is not None and (not isinstance(value, str) or value.strip())
    ]
    return (given[0], given[1]) if len(given) > 1 else None


# The North American zone abbreviations a contact list holds, and the zone each means.
_ABBREVIATED = {
    **dict.fromkeys(("ET", "EST", "EDT"), "America/New_York"),
    **dict.fromkeys(("CT", "CST", "CDT"), "America/Chicago"),
    **dict.fromkeys(("MT", "MST", "MDT"), "America/Denver"),
    **dict.fromkeys(("PT", "PST", "PDT"), "America/Los_Angeles"),
    **dict.fromkeys(("AKST", "AKDT"), "America/Anchorage"),
}
# Abbreviations that are IANA names too, of a fixed offset all year: where people write them
# the clocks move in summer, an hour later than they say, and calling hours read in them
# ended at 22:00 there.
_FIXED_ALL_YEAR = {
    "EST": "'EST' is UTC-5 all year, while Eastern time moves an hour in summer: write"
    " 'America/New_York'",
    "MST": "'MST' is UTC-7 all year, while Mountain time moves an hour in summer: write"
    " 'America/Denver' ('America/Phoenix' for Arizona, which stays at UTC-7)",
}


def fixed_all_year(value: str) -> str | None:
    """Why `value` (`EST`, `MST`), a zone name, is still not the zone its writer meant, or
    None: a row's time zone and a campaign window's are refused so."""
    return _FIXED_ALL_YEAR.get(value.strip())


def zone_meant(value: str) -> str | None:
    """The zone an abbreviation (`PST`) or another spelling (`europe/madrid`) means, if any."""
    return _ABBREVIATED.get(value.strip().upper()) or zone_spelled(value)


def row_zone_problem(value: object) -> str | None:
    """Why a recipient's `timezone` is not a zone to read its calling hours in, or None."""
    if isinstance(value, str) and (fixed := fixed_all_year(value)) is not None:
        return fixed
    if isinstance(value, str) and is_zone(value):
        return None
    example = "an IANA time zone name such as America/Chicago"
    if not isinstance(value, str):
        return f"must be {example}; got {quoted(value)}"
    hint = zone_meant(value)
    tail = f"did you mean {hint!r}?" if hint else f"use {example}"
    return f"unknown time zone {quoted(value)}; {tail}"


def call_zones(e164: str, *params: object) -> tuple[str, ...]:
    """The zones a recipient's calling hours are read in: its number's (`recipient_zones`)
    and the `timezone` its additional_params give (`params`: the row's, then the defaults'),
    when that is a zone. The window must be open in all of them: a zone given narrows the
    hours, it never widens them past the number's (the number's zones may be where the
    person is; a list's zone may be old). One not a zone (a row stored before they were
    checked) is not read."""
    zones = recipient_zones(e164)
    found = given_zone(*params)
    if found is None or not isinstance(found[1], str) or not is_zone(found[1]):
        return zones
    return zones if found[1] in zones else (*zones, found[1])


# ------------------------------------------------------------------ allowed instants

# One zone's rule: (zone, local start s, local end s, weekday bitmask 1<<0=Mon..1<<6=Sun).
_Rule = tuple[str, int, int, int]


def next_allowed(
    now_utc: datetime,
    window: CallingWindow,
    zones: Sequence[str],
    *,
    enforce_calling_hours: bool,
) -> datetime | None:
    """The earliest instant >= now_utc (in UTC) at which a call is allowed, or None if there
    is none within HORIZON (15 days): zones whose windows never overlap, or unknown zones.

    `zones` are the recipient's (from `recipient_zones`); they are ignored for the window
    when it names a zone, but still carry the calling-hours floor.
    """
    found = _lookup(now_utc, window, zones, enforce_calling_hours)
    if found is None:
        return None
    start, now_s = found
    if start <= now_s:
        return now_utc.astimezone(UTC)
    return datetime.fromtimestamp(start, UTC)


def is_allowed(
    now_utc: datetime,
    window: CallingWindow,
    zones: Sequence[str],
    *,
    enforce_calling_hours: bool,
) -> bool:
    """True if a call may be placed at now_utc (see next_allowed)."""
    found = _lookup(now_utc, window, zones, enforce_calling_hours)
    return found is not None and found[0] <= found[1]


def _lookup(
    now_utc: datetime, window: CallingWindow, zones: Sequence[str], enforce: bool
) -> tuple[int, int] | None:
    """(start of the first allowed interval ending after now, now in whole seconds), or None.

    Intervals have whole-second bounds, so comparing them with floor(now) is exact: now is
    inside [a, b) iff a <= floor(now) < b.
    """
    if now_utc.utcoffset() is None:
        raise ValueError("now_utc must be timezone-aware")
    rules = _rules(window, zones, enforce)
    if not rules:
        return None
    now_s = (now_utc - _EPOCH) // timedelta(seconds=1)
    starts, ends = _allowed(rules, now_s // _DAY_S)
    i = bisect_right(ends, now_s)
    if i == len(ends) or starts[i] - now_s > _HORIZON_S:
        return None
    return starts[i], now_s


def _seconds(value: time) -> int:
    return value.hour * 3600 + value.minute * 60 + value.second


_FLOOR_START = _seconds(CALLING_HOURS_START)
_FLOOR_END = _seconds(CALLING_HOURS_END)
_ALL_DAYS_MASK = 0b1111111


def _rules(window: CallingWindow, zones: Sequence[str], enforce: bool) -> tuple[_Rule, ...]:
    """The per-zone rules that must all hold, in a canonical order (a cache key); () when
    nothing can ever be allowed."""
    for zone in zones:
        if not is_zone(zone):
            raise ValueError(f"unknown time zone {zone!r}")
    start = _seconds(window.start)
    end = _DAY_S if window.end == END_OF_DAY else _seconds(window.end)
    mask = sum(1 << day for day in window.days)
    if window.timezone == RECIPIENT:
        if enforce:
            start, end = max(start, _FLOOR_START), min(end, _FLOOR_END)
        if not zones or start >= end:
            return ()
        return tuple((zone, start, end, mask) for zone in sorted(set(zones)))
    rules = {(window.timezone, start, end, mask)}
    if enforce:
        rules.update(
            (z, _FLOOR_START, _FLOOR_END, _ALL_DAYS_MASK) for z in zones or [window.timezone]
        )
    return tuple(sorted(rules))


@lru_cache(maxsize=4096)
def _allowed(rules: tuple[_Rule, ...], day0: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, ends) of the instants in UTC days [day0, day0 + _SPAN_DAYS) where every rule
    holds. Keyed by UTC day so that all rows of a campaign checked on one day share it."""
    result = _open_intervals(rules, day0 * _DAY_S, (day0 + _SPAN_DAYS) * _DAY_S)
    return tuple(a for a, _ in result), tuple(b for _, b in result)


@lru_cache(maxsize=4096)
def _zone_intervals(
    zone: str, start: int, end: int, mask: int, lo: int, hi: int
) -> tuple[Interval, ...]:
    """UTC intervals within [lo, hi) where the wall clock in `zone` reads within
    [start, end) seconds of a day whose weekday is in `mask`."""
    tz = ZoneInfo(zone)
    found: list[Interval] = []
    for a, b, offset in _offset_segments(tz, lo, hi):
        # Within [a, b) local wall time is u + offset; one local date gives one interval.
        for local_day in range((a + offset) // _DAY_S, (b - 1 + offset) // _DAY_S + 1):
            if not mask >> _weekday(local_day) & 1:
                continue
            base = local_day * _DAY_S - offset
            lo_s, hi_s = max(a, base + start), min(b, base + end)
            if lo_s < hi_s:
                found.append((lo_s, hi_s))
    return _merge(found)


def _weekday(epoch_day: int) -> int:
    """Monday=0 weekday of a day counted from 1970-01-01, which was a Thursday."""
    return (epoch_day + 3) % 7


def _offset(tz: ZoneInfo, instant: int) -> int:
    delta = datetime.fromtimestamp(instant, tz).utcoffset()
    return 0 if delta is None else int(delta.total_seconds())  # ZoneInfo always has one


def _offset_segments(tz: ZoneInfo, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """[lo, hi) cut where the zone's UTC offset changes: (start, end, offset) pieces.

    zoneinfo does not expose its transitions, so the offset is sampled every 6 hours and
    each change is located to the second by bisection (transitions are whole seconds).
    """
    segments: list[tuple[int, int, int]] = []
    seg_start, offset = lo, _offset(tz, lo)
    probe = lo
    while probe < hi:
        step = min(probe + _PROBE_S, hi)
        if _offset(tz, step) == offset:
            probe = step
            continue
        same, changed = probe, step  # offset(same) == offset != offset(changed)
        while changed - same > 1:
            mid = (same + changed) // 2
            if _offset(tz, mid) == offset:
                same = mid
            else:
                changed = mid
        if changed < hi:
            segments.append((seg_start, changed, offset))
            seg_start, offset = changed, _offset(tz, changed)
        probe = changed
    segments.append((seg_start, hi, offset))
    return segments


def _merge(intervals: list[Interval]) -> tuple[Interval, ...]:
    """Sorted, with overlapping or touching intervals joined (a segment cut is no gap)."""
    merged: list[Interval] = []
    for a, b in sorted(intervals):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return tuple(merged)


def _intersect(left: Sequence[Interval], right: Sequence[Interval]) -> list[Interval]:
    """Intersection of two sorted, disjoint interval lists (a linear merge)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(left) and j < len(right):
        a, b = max(left[i][0], right[j][0]), min(left[i][1], right[j][1])
        if a < b:
            out.append((a, b))
        if left[i][1] < right[j][1]:
            i += 1
        else:
            j += 1
    return out


# ------------------------------------------------------------------ open time ahead

_CHUNK_DAYS = 28  # open time is summed four whole weeks at a time (a window's period)


def after_open_time(
    start_utc: datetime,
    seconds: float,
    window: CallingWindow,
    zones: Sequence[str],
    *,
    enforce_calling_hours: bool,
) -> datetime | None:
    """The instant at which `seconds` of time inside the window (read as next_allowed reads
    it) have passed, counted from `start_utc`; for 0, the first allowed instant at or after
    it. None when the window is never open (no zone known for the recipients' own window).

    Four weeks are read at a time; a long stretch (a slow campaign of many rows) skips whole
    four-week periods by their open time, so its cost does not grow with the stretch.
    """
    if start_utc.utcoffset() is None:
        raise ValueError("start_utc must be timezone-aware")
    rules = _rules(window, zones, enforce_calling_hours)
    if not rules:
        return None
    at = start_utc.timestamp()
    need = max(0.0, seconds)
    day = int(at // _DAY_S)
    while True:
        lo, hi = day * _DAY_S, (day + _CHUNK_DAYS) * _DAY_S
        intervals = _open_intervals(rules, lo, hi)
        if not intervals:
            return None  # four weeks without an open minute: never
        for a, b in intervals:
            if b <= at:
                continue
            begin = max(a, at)
            if b - begin > need:
                return datetime.fromtimestamp(begin + need, UTC)
            need -= b - begin
        day += _CHUNK_DAYS
        at = hi
        period = sum(b - a for a, b in intervals)  # open time of four whole weeks
        if (skip := int(need // period) - 1) > 0:
            day += skip * _CHUNK_DAYS
            at = day * _DAY_S
            need -= skip * period


@lru_cache(maxsize=4096)
def _open_intervals(rules: tuple[_Rule, ...], lo: int, hi: int) -> tuple[Interval, ...]:
    """The instants in [lo, hi) where every rule holds (as _allowed, for any span).

    Kept, as _zone_intervals are: the intersection across a number's zones (11 for a
    Russian mobile, 25 for a US toll-free number) was made again for every campaign on every
    GET /campaigns page (its estimated finish), 1.2 ms each on the event loop."""
    result: Sequence[Interval] | None = None
    for zone, start, end, mask in rules:
        intervals = _zone_intervals(zone, start, end, mask, lo, hi)
        result = intervals if result is None else _intersect(result, intervals)
        if not result:
            return ()
    return tuple(result or ())


use_newest_zone_rules()  # at the end: it empties the caches above
