"""Campaign calling windows: parsing, recipient zones, the TCPA floor and next_allowed,
checked at fixed UTC instants and against a brute-force minute scan (hypothesis)."""

from __future__ import annotations

import os
import sysconfig
import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers.tzdata import TIMEZONE_DATA

from common.campaigns.windows import (
    ALL_DAYS,
    END_OF_DAY,
    HORIZON,
    CallingWindow,
    InvalidWindow,
    after_open_time,
    is_allowed,
    is_zone,
    next_allowed,
    packaged_tz_version,
    parse_window,
    recipient_zones,
    system_tz_version,
    use_newest_zone_rules,
)

NY = "America/New_York"
LA = "America/Los_Angeles"
NY_NUMBER = "+12125550123"
LA_NUMBER = "+13105550123"
US_TOLL_FREE = "+18005550123"
RU_MOBILE = "+79161234567"
AU_MOBILE = "+61412345678"
WEEKDAYS = frozenset(range(5))


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def window(
    start: str = "09:00",
    end: str = "20:00",
    days: frozenset[int] = ALL_DAYS,
    timezone: str = "recipient",
) -> CallingWindow:
    return CallingWindow(time.fromisoformat(start), time.fromisoformat(end), days, timezone)


def nxt(
    now: datetime, w: CallingWindow, zones: Sequence[str], *, enforce: bool = True
) -> datetime | None:
    return next_allowed(now, w, zones, enforce_calling_hours=enforce)


def allowed(now: datetime, w: CallingWindow, zones: Sequence[str], *, enforce: bool = True) -> bool:
    return is_allowed(now, w, zones, enforce_calling_hours=enforce)


# ------------------------------------------------------------------ parse_window


def test_defaults() -> None:
    expected = CallingWindow(time(9), time(20), ALL_DAYS, "recipient")
    assert parse_window(None) == expected
    assert parse_window({}) == expected
    assert CallingWindow() == expected


def test_full_window() -> None:
    parsed = parse_window(
        {
            "start": "08:30",
            "end": "17:45",
            "days": ["Mon", " tue ", "fri"],
            "timezone": "Europe/Madrid",
        }
    )
    assert parsed == CallingWindow(time(8, 30), time(17, 45), frozenset({0, 1, 4}), "Europe/Madrid")


@pytest.mark.parametrize("value", ["9:00", "24:00", "12:60", "09:00:00", "0900", "", 900, None])
def test_bad_start_is_refused_by_field(value: object) -> None:
    if value is None:  # null means "default", not an error
        assert parse_window({"start": value}).start == time(9)
        return
    with pytest.raises(InvalidWindow) as caught:
        parse_window({"start": value})
    assert [name for name, _ in caught.value.errors] == ["start"]
    assert "HH:MM" in str(caught.value)


@pytest.mark.parametrize(("start", "end"), [("10:00", "10:00"), ("20:00", "09:00")])
def test_start_must_be_before_end(start: str, end: str) -> None:
    with pytest.raises(InvalidWindow, match="end: must be after start"):
        parse_window({"start": start, "end": end})
    with pytest.raises(ValueError, match="before its end"):
        window(start, end)


def test_a_window_may_end_at_midnight_as_24_00() -> None:
    """ "09:00-24:00" (calls until midnight) was refused: "must be HH:MM on a 24-hour clock";
    no other end reached the day's last minute. ISO 8601's 24:00 ends the day."""
    from common.campaigns.model import CampaignSpec, Pacing, RetryPolicy

    w = parse_window({"start": "09:00", "end": "24:00", "timezone": "Europe/Madrid"})
    assert w.end == END_OF_DAY
    madrid = ZoneInfo("Europe/Madrid")
    at = datetime(2026, 12, 7, 23, 59, 30, tzinfo=madrid)
    assert allowed(at, w, [], enforce=False)
    assert nxt(datetime(2026, 12, 8, 0, 0, tzinfo=madrid), w, [], enforce=False) == datetime(
        2026, 12, 8, 9, 0, tzinfo=madrid
    )
    whole_day = parse_window({"start": "00:00", "end": "24:00", "timezone": "UTC"})
    assert allowed(utc(2026, 12, 7, 0, 0), whole_day, [], enforce=False)
    assert allowed(utc(2026, 12, 7, 23, 59), whole_day, [], enforce=False)
    spec = CampaignSpec({}, Pacing(), w, RetryPolicy())
    assert spec.to_json()["window"]["end"] == "24:00"  # shown (and stored) as given
    assert CampaignSpec.from_json(spec.to_json()).window == w
    with pytest.raises(InvalidWindow, match=r"start: .*24:00 only as a window's end"):
        parse_window({"start": "24:00"})
    with pytest.raises(InvalidWindow, match="24:00 ends one at midnight"):
        parse_window({"start": "09:00", "end": "00:00"})


def test_bad_days() -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window({"days": ["mon", "tues", 3]})
    assert [name for name, _ in caught.value.errors] == ["days[1]", "days[2]"]
    assert "'tues'" in str(caught.value)
    values: list[object] = [[], "mon", {"mon": True}]
    for value in values:
        with pytest.raises(InvalidWindow, match="^days: "):
            parse_window({"days": value})


@pytest.mark.parametrize("name", ["Mars/Olympus", "Etc/Unknown", "../../etc/passwd", "/etc/x", ""])
def test_unknown_zone(name: str) -> None:
    with pytest.raises(InvalidWindow, match="^timezone: unknown time zone"):
        parse_window({"timezone": name})


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"timezone": "Mars/" + "x" * 5_000_000}, "timezone"),
        ({"start": "9" * 1_000_000}, "start"),
        ({"end": ["09:00"] * 100_000}, "end"),
        ({"days": ["m" * 1_000_000]}, "days[0]"),
    ],
)
def test_a_bad_value_is_quoted_back_cut_and_escaped(window: dict[str, object], field: str) -> None:
    """A 5 MB time zone came back whole in the 422 (and in any log of it)."""
    with pytest.raises(InvalidWindow) as caught:
        parse_window(window)
    [(name, error)] = caught.value.errors
    assert name == field and len(error) < 200
    with pytest.raises(InvalidWindow) as bidi:
        parse_window({"timezone": "Europe/\u202eMadrid\n"})
    said = str(bidi.value)  # quoted as every client value is (common.text.quoted)
    assert "\u202e" not in said and "\n" not in said and "'Europe/\ufffdMadrid\ufffd'" in said


def test_zone_with_wrong_case_gets_a_hint() -> None:
    with pytest.raises(InvalidWindow, match="did you mean 'Europe/Madrid'"):
        parse_window({"timezone": "europe/madrid"})


def test_every_problem_is_reported_and_unknown_keys_refused() -> None:
    with pytest.raises(InvalidWindow) as caught:
        parse_window({"start": "x", "days": ["funday"], "timezone": 5, "time_zone": "UTC"})
    assert sorted(name for name, _ in caught.value.errors) == [
        "days[0]",
        "start",
        "time_zone",
        "timezone",
    ]
    with pytest.raises(InvalidWindow, match="^window: must be an object"):
        parse_window(["09:00", "20:00"])


def test_hand_built_windows_are_checked() -> None:
    with pytest.raises(ValueError, match="subset"):
        window(days=frozenset({7}))
    with pytest.raises(ValueError, match="subset"):
        window(days=frozenset())
    with pytest.raises(ValueError, match="unknown time zone"):
        window(timezone="Nowhere/City")


# ------------------------------------------------------------------ recipient_zones


def test_single_zone_numbers() -> None:
    assert recipient_zones(NY_NUMBER) == (NY,)
    assert recipient_zones(LA_NUMBER) == (LA,)
    assert recipient_zones("+34911234567") == ("Europe/Madrid",)


def test_multi_zone_numbers() -> None:
    toll_free = recipient_zones(US_TOLL_FREE)  # non-geographic: all of NANP
    assert {NY, LA, "Pacific/Honolulu", "Pacific/Guam", "America/St_Johns"} <= set(toll_free)
    russia = recipient_zones(RU_MOBILE)
    assert {"Europe/Moscow", "Asia/Vladivostok", "Asia/Anadyr"} <= set(russia)
    australia = recipient_zones(AU_MOBILE)
    assert {"Australia/Perth", "Australia/Sydney", "Australia/Lord_Howe"} <= set(australia)


def test_invalid_number_gets_its_whole_country() -> None:
    # +1 555 555 0123 is well formed (normalize_phone accepts it) but in no NANP range.
    assert set(recipient_zones("+15555550123")) == set(recipient_zones(US_TOLL_FREE))


def test_every_phonenumbers_zone_is_known_to_zoneinfo() -> None:
    names = {zone for zones in TIMEZONE_DATA.values() for zone in zones} - {"Etc/Unknown"}
    assert {name for name in names if not is_zone(name)} == set()


@pytest.mark.parametrize("number", ["+888123456789", "+80012345678", "not a number", ""])
def test_unknown_zones_are_empty(number: str) -> None:
    assert recipient_zones(number) == ()


# ------------------------------------------------------------------ next_allowed

# Wednesday 2025-03-12, 14:00 UTC: 10:00 in New York (EDT), 07:00 in Los Angeles (PDT).
WED_1400 = utc(2025, 3, 12, 14, 0)


def test_only_some_zones_open() -> None:
    w = window()
    assert allowed(WED_1400, w, [NY])
    assert nxt(WED_1400, w, [NY]) == WED_1400
    assert not allowed(WED_1400, w, [LA])
    assert nxt(WED_1400, w, [LA]) == utc(2025, 3, 12, 16, 0)  # 09:00 PDT
    # Both must hold: LA opens at 16:00 UTC, NY closes at 00:00 UTC (20:00 EDT).
    assert nxt(WED_1400, w, [NY, LA]) == utc(2025, 3, 12, 16, 0)
    assert nxt(utc(2025, 3, 13, 0, 0), w, [NY, LA]) == utc(2025, 3, 13, 16, 0)
    assert allowed(utc(2025, 3, 12, 23, 59), w, [NY, LA])


def test_russian_mobile_needs_the_overlap_from_bucharest_to_anadyr() -> None:
    zones = recipient_zones(RU_MOBILE)
    # Winter: Bucharest (UTC+2) opens 07:00 UTC; Anadyr (UTC+12) closes 08:00 UTC.
    assert nxt(utc(2025, 1, 15, 12, 0), window(), zones) == utc(2025, 1, 16, 7, 0)
    assert allowed(utc(2025, 1, 16, 7, 59), window(), zones)
    assert not allowed(utc(2025, 1, 16, 8, 0), window(), zones)


def test_australian_mobile_opens_when_cocos_does() -> None:
    zones = recipient_zones(AU_MOBILE)
    # March: Cocos (UTC+6:30) opens at 02:30 UTC, Lord Howe (UTC+11 in summer) closes 09:00.
    assert nxt(WED_1400, window(), zones) == utc(2025, 3, 13, 2, 30)
    assert not allowed(utc(2025, 3, 13, 9, 0), window(), zones)


def test_toll_free_spanning_guam_to_samoa_is_never_callable() -> None:
    zones = recipient_zones(US_TOLL_FREE)
    assert nxt(WED_1400, window(), zones) is None
    assert nxt(WED_1400, window("00:00", "23:59"), zones, enforce=False) is not None
    assert not allowed(WED_1400, window(), zones)


def test_unknown_zones_are_never_callable_in_recipient_time() -> None:
    assert nxt(WED_1400, window(), []) is None
    assert nxt(WED_1400, window(), [], enforce=False) is None
    assert not allowed(WED_1400, window(), [])


def test_weekends_are_skipped() -> None:
    weekdays = window(days=WEEKDAYS)
    friday_evening = utc(2025, 3, 15, 0, 30)  # Friday 20:30 EDT
    assert nxt(friday_evening, weekdays, [NY]) == utc(2025, 3, 17, 13, 0)  # Monday 09:00 EDT
    assert not allowed(utc(2025, 3, 15, 15, 0), weekdays, [NY])  # Saturday 11:00
    # The weekday is the recipient's: Friday 22:00 in LA is Saturday in UTC.
    assert allowed(utc(2025, 3, 15, 2, 0), window("09:00", "23:00", WEEKDAYS), [LA], enforce=False)


def test_calling_hours_floor_cuts_a_wide_window() -> None:
    wide = window("07:00", "22:00")
    early = utc(2025, 3, 12, 11, 30)  # 07:30 EDT
    assert nxt(early, wide, [NY], enforce=False) == early
    assert nxt(early, wide, [NY]) == utc(2025, 3, 12, 12, 0)  # 08:00 EDT
    late = utc(2025, 3, 13, 1, 30)  # 21:30 EDT
    assert allowed(late, wide, [NY], enforce=False)
    assert nxt(late, wide, [NY]) == utc(2025, 3, 13, 12, 0)
    assert not allowed(utc(2025, 3, 13, 1, 0), wide, [NY])  # 21:00 itself is out


def test_window_entirely_outside_the_floor_never_opens() -> None:
    assert nxt(WED_1400, window("21:00", "23:00"), [NY]) is None
    assert nxt(WED_1400, window("21:00", "23:00"), [NY], enforce=False) == utc(2025, 3, 13, 1, 0)


def test_spring_forward_in_new_york() -> None:
    # 2025-03-09: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    saturday_night = utc(2025, 3, 9, 1, 0)  # Saturday 20:00 EST
    assert nxt(saturday_night, window(), [NY]) == utc(2025, 3, 9, 13, 0)  # 09:00 EDT, not EST
    # A window starting inside the skipped hour opens when the clocks jump.
    gap = window("02:30", "04:00")
    assert nxt(saturday_night, gap, [NY], enforce=False) == utc(2025, 3, 9, 7, 0)
    assert not allowed(utc(2025, 3, 9, 8, 0), gap, [NY], enforce=False)  # 04:00 EDT
    # A window wholly inside the skipped hour does not exist that day.
    inside = window("02:10", "02:50")
    assert nxt(saturday_night, inside, [NY], enforce=False) == utc(2025, 3, 10, 6, 10)


def test_fall_back_in_new_york() -> None:
    # 2025-11-02: 02:00 EDT goes back to 01:00 EST (06:00 UTC); 01:xx happens twice.
    assert nxt(utc(2025, 11, 2, 1, 0), window(), [NY]) == utc(2025, 11, 2, 14, 0)  # 09:00 EST
    repeated = window("01:00", "01:30")
    assert nxt(utc(2025, 11, 2, 4, 0), repeated, [NY], enforce=False) == utc(2025, 11, 2, 5, 0)
    assert nxt(utc(2025, 11, 2, 5, 40), repeated, [NY], enforce=False) == utc(2025, 11, 2, 6, 0)
    assert not allowed(utc(2025, 11, 2, 6, 30), repeated, [NY], enforce=False)


def test_explicit_zone_window_keeps_the_recipient_floor() -> None:
    madrid = window("09:00", "18:00", timezone="Europe/Madrid")
    at_1300 = utc(2025, 3, 12, 13, 0)  # 14:00 Madrid (CET), 09:00 New York
    assert allowed(at_1300, madrid, [NY])
    at_1100 = utc(2025, 3, 12, 11, 0)  # 12:00 Madrid, 07:00 New York
    assert allowed(at_1100, madrid, [NY], enforce=False)
    assert nxt(at_1100, madrid, [NY]) == utc(2025, 3, 12, 12, 0)  # 08:00 in New York
    # The recipient's zones do not move the window itself.
    assert nxt(utc(2025, 3, 12, 17, 0), madrid, [LA], enforce=False) == utc(2025, 3, 13, 8, 0)
    # Unknown recipient zones: window and floor are both read in the named zone.
    assert nxt(utc(2025, 3, 12, 6, 0), window("07:00", "12:00", timezone="Europe/Madrid"), []) == (
        utc(2025, 3, 12, 7, 0)  # 08:00 Madrid
    )


def test_now_is_returned_as_given_when_open() -> None:
    now = datetime(2025, 3, 12, 10, 0, 0, 123456, tzinfo=ZoneInfo(NY))
    result = nxt(now, window(), [NY])
    assert result == now
    assert result is not None and result.tzinfo is UTC


def test_naive_now_and_unknown_zones_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        nxt(datetime(2025, 3, 12, 14), window(), [NY])
    with pytest.raises(ValueError, match="unknown time zone"):
        nxt(WED_1400, window(), ["Nowhere/City"])


def test_one_day_a_week_is_within_the_horizon() -> None:
    mondays = window(days=frozenset({0}))
    just_closed = utc(2025, 3, 11, 0, 0)  # Monday 20:00 EDT
    assert nxt(just_closed, mondays, [NY]) == utc(2025, 3, 17, 13, 0)
    assert utc(2025, 3, 17, 13, 0) - just_closed < HORIZON


def test_a_weekly_window_the_clocks_skip_opens_the_week_after() -> None:
    """Sundays 02:00-02:30 in New York, from the Sunday before the spring-forward one: that
    Sunday has no 02:00-02:30, the next opening is two weeks on. It was None (past the 8-day
    horizon): the rows were refused as "never inside the calling window"."""
    sundays = window("02:00", "02:30", days=frozenset({6}), timezone=NY)
    just_closed = utc(2026, 3, 1, 8, 0)  # Sunday 03:00 EST
    assert nxt(just_closed, sundays, [NY], enforce=False) == utc(2026, 3, 15, 6, 0)  # EDT
    # Lord Howe's clocks jump 02:00 to 02:30 on 2026-10-04: the week after, 02:00 (+11)
    lord_howe = "Australia/Lord_Howe"
    half_hour = window("02:00", "02:30", days=frozenset({6}), timezone=lord_howe)
    after = utc(2026, 9, 27, 0, 0)  # Sunday 10:30 (+10:30)
    assert nxt(after, half_hour, [lord_howe], enforce=False) == utc(2026, 10, 10, 15, 0)


# ------------------------------------------------------------------ the zone rules


def test_the_zone_rules_read_are_the_newest_installed() -> None:
    """zoneinfo read the system's files first: a system database older than the tzdata
    package installed with the project (2025b beside 2026f) put Vancouver and Casablanca an
    hour off, and their calls at 21:30 or 07:00 local time."""
    system = system_tz_version(str(sysconfig.get_config_var("TZPATH") or "").split(os.pathsep))
    release = packaged_tz_version()
    assert release is not None  # a dependency of the project
    if system is not None and system >= release:
        pytest.skip(f"the system's zone rules ({system}) are the newest here")
    months = [datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=30 * n) for n in range(60)]
    for zone in ("America/Vancouver", "Africa/Casablanca", "America/Havana", NY, LA):
        with resources.files("tzdata.zoneinfo").joinpath(*zone.split("/")).open("rb") as f:
            packaged = ZoneInfo.from_file(f, key=zone)
        read = ZoneInfo(zone)
        for at in months:
            assert at.astimezone(read).utcoffset() == at.astimezone(packaged).utcoffset(), (
                zone,
                at,
            )


@pytest.mark.parametrize(
    ("files", "version"),
    [
        ({"tzdata.zi": "# version 2025b\n# more\n"}, "2025b"),
        ({"+VERSION": "2024a\n"}, "2024a"),
        ({"tzdata.zi": "garbage\n"}, None),
        ({}, None),
    ],
)
def test_the_system_zone_rules_say_their_release(
    tmp_path: Path, files: dict[str, str], version: str | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert system_tz_version([str(tmp_path / "absent"), str(tmp_path)]) == version


def tzpath() -> tuple[str, ...]:
    """zoneinfo.TZPATH as it is now (read through a call: each reset changes it)."""
    return tuple(zoneinfo.TZPATH)


def test_newer_system_zone_rules_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONTZPATH", raising=False)
    before = zoneinfo.TZPATH
    try:
        (tmp_path / "tzdata.zi").write_text("# version 9999a\n")
        zoneinfo.reset_tzpath(to=[str(tmp_path)])
        use_newest_zone_rules()
        assert tzpath() == (str(tmp_path),)
        (tmp_path / "tzdata.zi").write_text("# version 2000a\n")
        use_newest_zone_rules()
        assert not tzpath()
        # A database the operator named (PYTHONTZPATH) is read whatever its release
        zoneinfo.reset_tzpath(to=[str(tmp_path)])
        monkeypatch.setenv("PYTHONTZPATH", str(tmp_path))
        use_newest_zone_rules()
        assert tzpath() == (str(tmp_path),)
    finally:
        zoneinfo.reset_tzpath(to=before)
        ZoneInfo.clear_cache()


# ------------------------------------------------------------------ against a brute-force scan

ZONE_SETS: list[tuple[str, ...]] = [
    (NY,),
    (LA,),
    (NY, LA),
    ("Australia/Lord_Howe", "Australia/Perth"),  # half-hour DST shift
    ("Europe/London", "Asia/Kathmandu"),  # +05:45
    ("America/St_Johns",),  # -03:30 with DST
    ("Europe/Moscow", "Asia/Anadyr"),
    (),
]
# Instants around DST changes in the zones above, where mistakes would show.
TRANSITIONS = [
    utc(2024, 3, 10, 7),
    utc(2024, 11, 3, 6),
    utc(2025, 3, 9, 7),
    utc(2025, 11, 2, 6),
    utc(2025, 3, 30, 1),
    utc(2025, 10, 26, 1),
    utc(2025, 4, 5, 15),
    utc(2025, 10, 4, 15, 30),
    utc(2025, 3, 9, 5, 30),
]


def oracle(instant: datetime, w: CallingWindow, zones: Sequence[str], enforce: bool) -> bool:
    """The definition, checked directly: local times via zoneinfo, zone by zone."""
    recipient = w.timezone == "recipient"
    window_zones = list(zones) if recipient else [w.timezone]
    if not window_zones:
        return False
    for zone in window_zones:
        local = instant.astimezone(ZoneInfo(zone))
        before_end = w.end == END_OF_DAY or local.time() < w.end  # 24:00: the day's end
        if local.weekday() not in w.days or not (w.start <= local.time() and before_end):
            return False
    if enforce:
        for zone in zones if recipient or zones else [w.timezone]:
            if not time(8) <= instant.astimezone(ZoneInfo(zone)).time() < time(21):
                return False
    return True


minutes = st.integers(0, 23 * 60 + 45)
instants = st.one_of(
    st.integers(int(utc(2020, 1, 1).timestamp()), int(utc(2030, 12, 31).timestamp())).map(
        lambda s: datetime.fromtimestamp(s, UTC)
    ),
    st.tuples(st.sampled_from(TRANSITIONS), st.integers(-3 * 86400, 3 * 86400)).map(
        lambda pair: pair[0] + timedelta(seconds=pair[1])
    ),
)


@st.composite
def windows(draw: st.DrawFn) -> CallingWindow:
    start = draw(st.integers(0, 23 * 4 - 1)) * 15
    end = draw(st.integers(start // 15 + 1, 24 * 4)) * 15  # up to 24:00
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    timezone = draw(
        st.sampled_from(["recipient", "recipient", "Europe/Madrid", "Pacific/Auckland"])
    )
    end_time = END_OF_DAY if end == 24 * 60 else time(*divmod(end, 60))
    return CallingWindow(time(*divmod(start, 60)), end_time, days, timezone)


@settings(max_examples=60, deadline=None)
@given(instants, windows(), st.sampled_from(ZONE_SETS), st.booleans())
def test_next_allowed_matches_a_minute_scan(
    now: datetime, w: CallingWindow, zones: tuple[str, ...], enforce: bool
) -> None:
    result = nxt(now, w, zones, enforce=enforce)
    assert allowed(now, w, zones, enforce=enforce) == oracle(now, w, zones, enforce)
    limit = now + HORIZON if result is None else result
    if result is not None:
        assert now <= result <= now + HORIZON
        assert oracle(result, w, zones, enforce)
        if result > now:
            assert not oracle(result - timedelta(seconds=1), w, zones, enforce)
    # Nothing earlier: every boundary is on a whole minute, so scanning minutes is complete.
    assert result == now or not oracle(now, w, zones, enforce)
    minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while minute < limit:
        assert not oracle(minute, w, zones, enforce), minute
        minute += timedelta(minutes=1)


# ------------------------------------------------------------------ open time ahead
# estimated_finish_at counted every hour of the day: a campaign calling 9-17 showed a finish
# at night (BS). The time it takes is counted inside its window only.

NINE_TO_FIVE = CallingWindow(time(9), time(17))
NINE_TO_FIVE_NY_WEEKDAYS = CallingWindow(time(9), time(17), WEEKDAYS, NY)
TOKYO = "Asia/Tokyo"  # no DST: whole days of open time are exact


def finish(start: datetime, seconds: float, w: CallingWindow, zones: Sequence[str]) -> datetime:
    found = after_open_time(start, seconds, w, zones, enforce_calling_hours=False)
    assert found is not None
    return found


def test_open_time_spills_into_the_next_days_window() -> None:
    # Monday 09:00 in New York; 10 hours of calls: 8 on Monday, 2 on Tuesday.
    start = utc(2026, 12, 7, 14)
    assert finish(start, 10 * 3600, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 8, 16)
    # 8 hours exactly: the window closes at 17:00 (not allowed), the last call Tuesday 09:00.
    assert finish(start, 8 * 3600, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 8, 14)
    # Friday's window full: Monday.
    friday = utc(2026, 12, 11, 14)
    assert finish(friday, 9 * 3600, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 14, 15)


def test_a_start_outside_the_window_waits_for_it() -> None:
    saturday_noon = utc(2026, 12, 5, 12)  # weekend in New York
    assert finish(saturday_noon, 0, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 7, 14)
    assert finish(saturday_noon, 3600, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 7, 15)
    night = utc(2026, 12, 8, 3)  # Monday 22:00 in New York
    assert finish(night, 1800, NINE_TO_FIVE_NY_WEEKDAYS, ()) == utc(2026, 12, 8, 14, 30)


def test_the_recipients_own_window_is_read_in_their_zones() -> None:
    wednesday = utc(2026, 12, 2, 18)  # 10:00 in Los Angeles, 13:00 in New York
    assert finish(wednesday, 8 * 3600, NINE_TO_FIVE, (LA,)) == utc(2026, 12, 3, 18)
    # Open in both only 12:00-17:00 New York (17:00-22:00 UTC): 4 hours on Wednesday, 2 more
    # on Thursday.
    assert finish(wednesday, 6 * 3600, NINE_TO_FIVE, (NY, LA)) == utc(2026, 12, 3, 19)
    # In Madrid (UTC+1) it is 19:00: Thursday 09:00 there, plus the hour.
    assert finish(wednesday, 3600, NINE_TO_FIVE, ("Europe/Madrid",)) == utc(2026, 12, 3, 9)


def test_the_floor_counts_when_asked() -> None:
    wide = CallingWindow(time(0), time(23, 59), ALL_DAYS, NY)
    start = utc(2026, 12, 7, 14)  # 09:00 in New York, 06:00 in Los Angeles
    assert after_open_time(start, 0, wide, (LA,), enforce_calling_hours=False) == start
    opens = after_open_time(start, 0, wide, (LA,), enforce_calling_hours=True)
    assert opens == utc(2026, 12, 7, 16)  # 08:00 in Los Angeles


def test_a_window_across_a_dst_change_keeps_its_local_hours() -> None:
    # New York springs forward on Sunday 2026-03-08: 09:00 is 14:00 UTC before, 13:00 after.
    saturday = utc(2026, 3, 7, 14)
    assert finish(saturday, 8 * 3600 + 60, NINE_TO_FIVE, (NY,)) == utc(2026, 3, 8, 13, 1)


def test_a_long_slow_campaign_skips_whole_weeks_exactly_and_quickly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import common.campaigns.windows as windows

    read: list[int] = []  # the four-week periods read one by one (a long stretch skips most)
    open_intervals = windows._open_intervals

    def counted(*args: Any) -> Any:
        read.append(1)
        return open_intervals(*args)

    monkeypatch.setattr(windows, "_open_intervals", counted)
    # 100,000 calls at 0.01 a second: 9,999,900 s of calls at 8 open hours a day is 347 whole
    # days (9,993,600 s) and 6,300 s more: 10:45 in Tokyo, 347 days on.
    start = datetime(2026, 12, 7, 9, tzinfo=ZoneInfo(TOKYO))
    found = finish(start, 99_999 * 100, CallingWindow(time(9), time(17), ALL_DAYS, TOKYO), ())
    assert found == (start + timedelta(days=347, hours=1, minutes=45)).astimezone(UTC)
    assert len(read) <= 3, len(read)  # not the 13 periods of 347 days
    # The same at 5 days a week: 347.2 weeks of 40 h; checked against a walk of every day.
    w = CallingWindow(time(9), time(17), WEEKDAYS, TOKYO)
    need = 99_999 * 100
    day = start
    while need >= 0:
        if day.weekday() in WEEKDAYS:
            if need < 8 * 3600:
                expected = day + timedelta(seconds=need)
                break
            need -= 8 * 3600
        day += timedelta(days=1)
    assert finish(start, 99_999 * 100, w, ()) == expected.astimezone(UTC)


def test_a_window_never_open_has_no_answer() -> None:
    assert (
        after_open_time(utc(2026, 12, 7), 60, NINE_TO_FIVE, (), enforce_calling_hours=False) is None
    )
    with pytest.raises(ValueError, match="aware"):
        after_open_time(datetime(2026, 12, 7), 0, NINE_TO_FIVE, (LA,), enforce_calling_hours=False)


@settings(max_examples=30, deadline=None)
@given(instants, windows(), st.sampled_from(ZONE_SETS), st.integers(0, 2 * 3600))
def test_open_time_matches_a_minute_scan(
    start: datetime, w: CallingWindow, zones: tuple[str, ...], seconds: int
) -> None:
    start = start.replace(second=0)
    seconds -= seconds % 60
    found = after_open_time(start, seconds, w, zones, enforce_calling_hours=False)
    if found is None:
        assert w.timezone == "recipient"  # never open in its zones (or none known)
        assert nxt(start, w, zones, enforce=False) is None
        return
    # Every boundary is on a whole minute: count the open minutes from start to found.
    assert oracle(found, w, zones, False)
    minute, open_s = start, 0
    while minute < found:
        open_s += 60 if oracle(minute, w, zones, False) else 0
        minute += timedelta(minutes=1)
    assert open_s == seconds


def test_a_rows_own_zone_is_read_with_its_numbers() -> None:
    from common.campaigns.windows import call_zones

    ny = "+12125557700"
    assert call_zones(ny) == ("America/New_York",)
    assert call_zones(ny, {"TimeZone": "America/Los_Angeles"}) == (
        "America/New_York",
        "America/Los_Angeles",
    )
    assert call_zones(ny, {"timezone": "America/New_York"}) == ("America/New_York",)
    for key in ("time_zone", "Time Zone", "TIME-ZONE"):
        assert call_zones(ny, {key: "America/Chicago"})[1:] == ("America/Chicago",)
    assert call_zones(ny, {"zone": "America/Chicago"}) == ("America/New_York",)
    # the row's over the defaults'; a blank one is none; one stored unchecked is not read
    assert call_zones(ny, {"timezone": "Europe/Madrid"}, {"timezone": "Asia/Tokyo"})[1:] == (
        "Europe/Madrid",
    )
    assert call_zones(ny, {"timezone": " "}, {"timezone": "Asia/Tokyo"})[1:] == ("Asia/Tokyo",)
    assert call_zones(ny, {"timezone": "Mars/Olympus"}) == ("America/New_York",)
    assert call_zones(ny, {"timezone": 5}, None, "x") == ("America/New_York",)
    # a number of no known zone has the row's
    assert call_zones("+80012345678") == ()
    assert call_zones("+80012345678", {"timezone": "Europe/Paris"}) == ("Europe/Paris",)


def test_a_numbers_zones_and_open_time_are_worked_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GET /campaigns?limit=1000 parsed each campaign's next number and intersected its
    zones' hours on every page: 260-577 ms on the event loop. Kept, each is the same answer
    as worked out afresh, and the kept numbers are bounded."""
    import phonenumbers

    import common.campaigns.windows as windows

    parsed: list[str] = []
    intersected: list[int] = []
    parse, intersect = phonenumbers.parse, windows._intersect

    def counted_parse(number: str, region: str | None) -> phonenumbers.PhoneNumber:
        parsed.append(number)
        return parse(number, region)

    def counted_intersect(*args: Any) -> Any:
        intersected.append(1)
        return intersect(*args)

    def forget() -> None:
        for kept in (windows.recipient_zones, windows._open_intervals):
            getattr(kept, "cache_clear", lambda: None)()

    def answers() -> list[tuple[tuple[str, ...], datetime | None]]:
        start = utc(2026, 12, 7, 12)
        numbers = (RU_MOBILE, US_TOLL_FREE, AU_MOBILE)
        return [
            (recipient_zones(n), finish(start, 3600, window(), recipient_zones(n))) for n in numbers
        ]

    monkeypatch.setattr(phonenumbers, "parse", counted_parse)
    monkeypatch.setattr(windows, "_intersect", counted_intersect)
    forget()
    first = answers()
    assert parsed and intersected
    parsed.clear()
    intersected.clear()
    assert answers() == first
    assert not parsed and not intersected, (len(parsed), len(intersected))
    forget()
    assert answers() == first  # as worked out afresh
    assert windows.recipient_zones.cache_info().maxsize == 8192
    assert windows._open_intervals.cache_info().maxsize == 4096
