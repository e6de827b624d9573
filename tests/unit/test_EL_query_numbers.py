"""A CSV upload's options in the query are read "as the JSON body's would be", but their
numbers were read by Python's float(), which also takes `1_0` (10), ` 6_0 ` (60), other
scripts' digits and `nan`: `max_attempts=1_0` made a campaign calling each person up to 10
times where its JSON body would have been refused. They are JSON numbers now."""

from __future__ import annotations

import pytest

from common.calls.errors import InvalidCall
from common.calls.request import RequestRules
from common.campaigns.request import CampaignOptions, options_from_query, parse_options
from common.settings import Settings

NOW = 1_764_990_000.0


def _options(**query: str) -> CampaignOptions:
    return parse_options(
        {"name": "List", **options_from_query(query)}, RequestRules.of(Settings()), NOW
    )


@pytest.mark.parametrize("value", ["1_0", " 3 ", "\uff13", "\u0663", "0x3", "+3", "03", "3."])
def test_a_number_that_is_no_json_number_is_refused(value: str) -> None:
    with pytest.raises(InvalidCall) as refused:
        _options(max_attempts=value)
    assert [e.field for e in refused.value.errors] == ["retry.max_attempts"]


@pytest.mark.parametrize(
    ("param", "value", "read"),
    [
        ("max_attempts", "3", 3),
        ("max_concurrent", "1e1", 10),
        ("max_concurrent", "10.0", 10),
        ("calls_per_second", "0.5", 0.5),
        ("calls_per_second", "2E-1", 0.2),
        ("delay_s", "6e1", 60),
    ],
)
def test_json_numbers_are_read(param: str, value: str, read: float) -> None:
    options = _options(**{param: value})
    section = "retry" if param in ("max_attempts", "delay_s") else "pacing"
    key = "calls_per_second" if param == "calls_per_second" else param
    assert getattr(getattr(options.spec, section), key) == read
