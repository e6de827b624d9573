"""A campaign paused before its start_at and resumed after it starts at the resume: its
customer webhooks said campaign.resumed before campaign.started (one transaction, one
timestamp), so a receiver heard "resumed" of a campaign it had never been told had started.
It hears campaign.started first."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import FAST, create, us
from tests.integration.test_customer_webhooks import (
    receivers,  # noqa: F401 - the fixture
    wait_until,
    webhook_app,
)


async def test_a_campaign_resumed_after_its_start_at_is_said_started_then_resumed(
    start_app: AppFactory,
    receivers: Any,  # noqa: F811 - the fixture imported above
) -> None:
    receiver = await receivers()
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await webhook_app(
        start_app, receiver.url, sandbox_time_scale=0.0, campaign_clock=clock, **FAST
    )
    answer = await create(
        client,
        {
            "name": "later",
            "recipients": [{"phone_number": us(0, "7760")}],
            "start_at": dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 600, dt.UTC).isoformat(),
        },
    )
    campaign_id = answer["campaign_id"]
    assert answer["campaign"]["status"] == "scheduled"
    assert (await client.post(f"/campaigns/{campaign_id}/pause")).status == 200
    clock.move_to(OPEN_EVERYWHERE + 1200)  # its start_at passed while it was paused
    resumed = await client.post(f"/campaigns/{campaign_id}/resume")
    assert resumed.status == 200, await resumed.text()
    assert (await resumed.json())["campaign"]["status"] == "running"
    await wait_until(lambda: "campaign.resumed" in receiver.types(campaign_id), timeout=10)
    await wait_until(lambda: "campaign.started" in receiver.types(campaign_id), timeout=10)
    told = [t for t in receiver.types(campaign_id) if t != "campaign.completed"]
    assert told == ["campaign.paused", "campaign.started", "campaign.resumed"]
