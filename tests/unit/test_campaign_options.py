"""A campaign's options (pacing, retry) as a JSON body or a query gives them."""

from __future__ import annotations

from typing import Any

import pytest

from common.calls.errors import InvalidCall
from common.calls.request import RequestRules
from common.campaigns.request import CampaignOptions, options_from_query, parse_options

NOW = 1_790_000_000.0


def options(**given: Any) -> CampaignOptions:
    return parse_options({"name": "n", **given}, RequestRules(), NOW)


def refused(**given: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidCall) as caught:
        options(**given)
    return [(e.field, e.error) for e in caught.value.errors]


def test_a_whole_number_written_with_a_point_is_whole() -> None:
    """{"max_concurrent": 10.0} (Python's json.dumps of a float, a form's "10.0") was refused
    "must be a whole number from 1 to 1000", which 10.0 is; a call's seconds take it."""
    spec = options(pacing={"max_concurrent": 10.0}, retry={"max_attempts": 3.0}).spec
    assert (spec.pacing.max_concurrent, spec.retry.max_attempts) == (10, 3)
    assert isinstance(spec.pacing.max_concurrent, int)
    query = options_from_query({"max_concurrent": "20.0", "max_attempts": "2.0"})
    spec = options(**{k: v for k, v in query.items() if k != "name"}).spec
    assert (spec.pacing.max_concurrent, spec.retry.max_attempts) == (20, 2)
    assert refused(pacing={"max_concurrent": 2.5}) == [
        ("pacing.max_concurrent", "must be a whole number from 1 to 1000")
    ]
    assert refused(retry={"max_attempts": 11.0}) == [
        ("retry.max_attempts", "must be a whole number from 1 to 10")
    ]


def test_a_number_sent_as_a_string_is_told_so() -> None:
    """{"calls_per_second": "2"} was refused "must be a number from 0.01 to 100", which 2 is:
    its sender could not see what to change (a call's seconds say so already)."""
    hint = ", a JSON number, not a string"
    assert refused(pacing={"calls_per_second": "2", "max_concurrent": "10"}) == [
        ("pacing.calls_per_second", "must be a number from 0.01 to 100" + hint),
        ("pacing.max_concurrent", "must be a whole number from 1 to 1000" + hint),
    ]
    assert refused(retry={"max_attempts": "3", "delay_s": "60"}) == [
        ("retry.max_attempts", "must be a whole number from 1 to 10" + hint),
        ("retry.delay_s", "must be a number from 60 to 604800" + hint),
    ]
    # Text that is no number, in a body or a query, and other kinds: the range alone.
    assert refused(pacing={"calls_per_second": "fast", "max_concurrent": True}) == [
        ("pacing.calls_per_second", "must be a number from 0.01 to 100"),
        ("pacing.max_concurrent", "must be a whole number from 1 to 1000"),
    ]
    query = options_from_query({"calls_per_second": "fast", "max_attempts": "[1]"})
    assert refused(**{k: v for k, v in query.items() if k != "name"}) == [
        ("pacing.calls_per_second", "must be a number from 0.01 to 100"),
        ("retry.max_attempts", "must be a whole number from 1 to 10"),
    ]


def test_a_leap_second_start_at_is_the_second_after_23_59_59() -> None:
    """ "2026-12-31T23:59:60Z" (RFC 3339 allows a leap second) was refused "must be an
    ISO-8601 time with a UTC offset", which it is; it is now the second after 23:59:59 UTC
    (as POSIX time counts it), and a :60 at another minute says why it is refused."""
    new_year = 1_798_761_600.0  # 2027-01-01T00:00:00Z
    assert options(start_at="2026-12-31T23:59:60Z").start_at == new_year
    assert options(start_at="2027-01-01T00:59:60.5+01:00").start_at == new_year + 0.5
    assert refused(start_at="2026-12-31T12:34:60Z") == [
        ("start_at", "has second 60, a leap second, which only 23:59:60 UTC has")
    ]
    assert refused(start_at="2026-12-31T23:59:61Z") == [
        ("start_at", "must be an ISO-8601 time with a UTC offset, e.g. 2026-12-24T09:00:00Z")
    ]
