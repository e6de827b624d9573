"""A campaign's retry.on that names something other than a status retried says which value
and, when only its case or the separator between its words is off, the status meant:
`["busy", "no-answer"]` was told "must be a list of busy, no_answer, voicemail, failed",
naming neither the value refused nor what to write."""

from __future__ import annotations

import pytest

from common.campaigns.request import options_from_query
from tests.unit.test_campaign_options import refused

STATUSES = "must be a list of busy, no_answer, voicemail, failed"


@pytest.mark.parametrize(
    ("on", "told"),
    [
        (["busy", "no-answer"], "'no-answer' is written 'no_answer'"),
        (["No Answer"], "'No Answer' is written 'no_answer'"),
        (["BUSY"], "'BUSY' is written 'busy'"),
        (["voice mail"], "'voice mail' is written 'voicemail'"),
        (["busy", "completed"], "'completed' is none of them"),
        ([1], "1 is none of them"),
    ],
)
def test_the_value_refused_is_named(on: list[object], told: str) -> None:
    assert refused(retry={"on": on}) == [("retry.on", f"{STATUSES}; {told}")]


def test_a_query_value_is_named_too() -> None:
    query = options_from_query({"retry_on": "busy,no-answer"})
    assert refused(**{k: v for k, v in query.items() if k != "name"}) == [
        ("retry.on", f"{STATUSES}; 'no-answer' is written 'no_answer'")
    ]


def test_no_list_is_told_so() -> None:
    assert refused(retry={"on": "busy"}) == [("retry.on", STATUSES)]
