"""A start_at at the calendar's very end or start is refused as a client's error."""

from __future__ import annotations

import pytest

from tests.unit.test_campaign_options import refused

LEAP = ("start_at", "has second 60, a leap second, which only 23:59:60 UTC has")


@pytest.mark.parametrize(
    "start_at",
    [
        "9999-12-31T23:59:60-14:00",  # in UTC, past the year 9999 datetime ends with
        "0001-01-01T00:00:60+14:00",  # in UTC, before the year 1 it starts with
    ],
)
def test_a_leap_second_whose_utc_time_no_datetime_holds_is_refused(start_at: str) -> None:
    """Reading it in UTC raised OverflowError: POST /campaigns answered 500 "internal
    error" (and logged a traceback) for the client's own bad value."""
    assert refused(start_at=start_at) == [LEAP]
