"""A campaign held at a limit says so once a minute, not once per pacing slot."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from common.calls.errors import TooManyLiveCalls
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import FAST, create, us, wait_status

REFUSALS = 12


async def test_refusals_by_the_live_cap_are_said_once_a_minute(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """CALLS_MAX_ACTIVE full: every pacing slot tried the next recipient, refused alike, and
    each wrote its INFO line (114 in 10 s for a 60-row list at 20 calls/s; its calls' own
    lines drowned in them)."""
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    calls = client.app[CALLS]
    real_place = calls.place
    refusals = 0

    async def full(*args: Any, **kwargs: Any) -> Any:
        nonlocal refusals
        if refusals < REFUSALS:
            refusals += 1
            raise TooManyLiveCalls(2, 0)
        return await real_place(*args, **kwargs)

    calls.place = full
    body = {
        "name": "at the cap",
        "recipients": [{"phone_number": us(n, "7700")} for n in range(3)],
        "pacing": {"calls_per_second": 100},
    }
    with caplog.at_level(logging.INFO, logger="common.campaigns.scheduler"):
        created = await create(client, body)
        campaign = await wait_status(client, created["campaign_id"], "completed", timeout=20)
    assert campaign["counts"]["completed"] == 3
    said = [r for r in caplog.records if "too many live calls" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
