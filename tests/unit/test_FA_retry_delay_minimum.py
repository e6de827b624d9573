"""A campaign's retry.delay_s below a minute is refused: 0 was taken, and a busy or
unanswered number was redialled up to 10 times back to back (its callee hounded, the trunk
flagged as spam by carriers)."""

from __future__ import annotations

import pytest

from common.campaigns.request import options_from_query
from tests.unit.test_campaign_options import options, refused

TOO_SOON = (
    "must be at least 60 (seconds): a busy or unanswered number redialled sooner hounds its"
    " callee, and carriers flag the trunk as spam"
)


@pytest.mark.parametrize("delay", [0, 0.0, 1, 59.9])
def test_a_delay_under_a_minute_is_refused_naming_the_minimum(delay: float) -> None:
    assert refused(retry={"on": ["busy"], "max_attempts": 10, "delay_s": delay}) == [
        ("retry.delay_s", TOO_SOON)
    ]


def test_a_query_delay_under_a_minute_is_refused_too() -> None:
    query = options_from_query({"delay_s": "0", "retry_on": "busy"})
    assert refused(**{k: v for k, v in query.items() if k != "name"}) == [
        ("retry.delay_s", TOO_SOON)
    ]


def test_a_minute_and_the_default_are_taken() -> None:
    assert options(retry={"delay_s": 60}).spec.retry.delay_s == 60.0
    assert options().spec.retry.delay_s == 600.0
    assert refused(retry={"delay_s": -1}) == [
        ("retry.delay_s", "must be a number from 60 to 604800")
    ]
