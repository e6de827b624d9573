"""The trunk-fault WARNING (33de71f) for a campaign's call names its campaign, as the call's
status line does: it named the call alone, and a JSON log filtered by `campaign_id` (bfff0a6)
showed the campaign's failed calls but not the one line saying why every one failed."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, create, us, wait_status


async def test_a_campaign_calls_trunk_fault_warning_names_the_campaign(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    # a number the sandbox fails at the trunk
    body = {"name": "Dead trunk", "recipients": [{"phone_number": us(0, "0503")}]}
    campaign_id = (await create(client, body))["campaign_id"]
    await wait_status(client, campaign_id, "completed", timeout=20)

    async def warned() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.levelno == logging.WARNING and "no call reaches anyone" in r.getMessage()
        ]

    await wait_for(warned, timeout=10)
    [line] = await warned()
    assert f"(campaign {campaign_id}) failed: " in line.getMessage(), line.getMessage()
    assert getattr(line, "campaign_id", None) == campaign_id
