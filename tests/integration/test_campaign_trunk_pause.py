"""A trunk its carrier refuses fails every call: a campaign went on through its whole list at
its pace, every recipient `failed` for good, while the trunk-fault WARNING came once a minute.
CAMPAIGN_PAUSE_AFTER_TRUNK_FAULTS (10) calls failing at the trunk in a row pause it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_campaigns import (
    FAST,
    all_recipients,
    campaign_of,
    create,
    us,
    wait_status,
)

TRUNK_FAILS = "0503"  # the sandbox's trunk failure (SIP 503, the line dropped unanswered)
ANSWERED = "7700"


def body(suffixes: list[str]) -> dict[str, Any]:
    return {
        "name": "trunk",
        "recipients": [{"phone_number": us(n, s)} for n, s in enumerate(suffixes)],
        "pacing": {"calls_per_second": 100, "max_concurrent": 1},  # one after the other
    }


async def test_a_campaign_whose_calls_keep_failing_at_the_trunk_is_paused(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="common.campaigns.service")
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    created = await create(client, body([TRUNK_FAILS] * 25))
    campaign_id = created["campaign_id"]
    await wait_status(client, campaign_id, "paused", timeout=60)

    async def settled() -> bool:  # the pause and the tenth recipient's end are told apart
        return bool((await campaign_of(client, campaign_id))["counts"]["calling"] == 0)

    await wait_for(settled, timeout=10)  # (one more may have been dialled meanwhile)
    campaign = await campaign_of(client, campaign_id)
    failed = campaign["counts"]["failed"]
    assert 10 <= failed < 25, campaign["counts"]
    states = [r["state"] for r in await all_recipients(client, campaign_id)]
    assert states.count("pending") == 25 - failed - states.count("calling")
    [said] = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert said.startswith(f"campaign {campaign_id} paused: its last 10 calls failed at the trunk")
    assert f"POST /campaigns/{campaign_id}/resume" in said


async def test_a_call_that_reaches_someone_starts_the_count_again(
    start_app: AppFactory,
) -> None:
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    suffixes = [TRUNK_FAILS] * 9 + [ANSWERED] + [TRUNK_FAILS] * 9
    created = await create(client, body(suffixes))
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=60)
    assert (campaign["counts"]["failed"], campaign["counts"]["completed"]) == (18, 1)


async def test_with_the_setting_0_a_campaign_is_never_paused(start_app: AppFactory) -> None:
    client = await start_app(
        sandbox_time_scale=0.0,
        campaign_clock=ShiftedClock(OPEN_EVERYWHERE),
        campaign_pause_after_trunk_faults=0,
        **FAST,
    )
    created = await create(client, body([TRUNK_FAILS] * 12))

    async def over() -> bool:
        answer = await (await client.get(f"/campaigns/{created['campaign_id']}")).json()
        return bool(answer["campaign"]["status"] == "completed")

    await wait_for(over, timeout=60)
