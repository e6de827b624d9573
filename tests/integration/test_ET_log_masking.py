"""Client-sent text in log lines is masked as the rest of the logs are: a phone number in a
campaign's name (logged at its creation, when a server drives it and at its end) wrote it
whole, where a call's name holding one is masked (`Caller Name: +•••••••0123`); and a report
that could not be stored logged its error's first 200 characters as they were."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic_core import PydanticSerializationError

from common.contracts import AgentReport
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_call_results import report
from tests.integration.test_campaigns import FAST, create, us, wait_status
from tests.integration.test_report_limits import post_text
from tests.integration.test_webhooks import place, quiet_app


async def test_a_number_in_a_campaigns_name_is_masked_in_its_log_lines(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.campaigns")
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    body: dict[str, Any] = {
        "name": "Follow-up +1 415 555 0123",
        "recipients": [{"phone_number": us(0, "7700")}],
        "retry": {"max_attempts": 1},
    }
    campaign_id = (await create(client, body))["campaign_id"]
    await wait_status(client, campaign_id, "completed", timeout=10)
    ended = f"campaign {campaign_id} (Follow-up +• ••• ••• 0123) completed: 1 completed"

    async def said() -> bool:
        return ended in caplog.text

    await wait_for(said, timeout=5)
    lines = [r.getMessage() for r in caplog.records if campaign_id in r.getMessage()]
    assert any("(Follow-up +• ••• ••• 0123) created" in line for line in lines), lines
    assert any("(Follow-up +• ••• ••• 0123): driving it" in line for line in lines), lines
    assert not any("415 555" in line for line in lines), lines


async def test_a_report_that_cannot_be_stored_logs_its_error_masked(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The error is cut after it is masked: a number across the cut shows no more than its
    last four digits."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    why = "Error serializing to JSON: " + "x" * 160 + " +14155550123 in 'name'"

    def unwritable(_report: AgentReport) -> bytes:
        raise PydanticSerializationError(why)

    monkeypatch.setattr(AgentReport, "to_json", unwritable)
    with caplog.at_level(logging.WARNING, logger="handlers.reports"):
        sent = report(call_id, 1, "turn", turn={"role": "agent", "text": "Hi", "at_s": 0.5})
        status, _ = await post_text(client, call_id, json.dumps(sent))
    assert status == 400
    said = [r.getMessage() for r in caplog.records if "could not be stored" in r.getMessage()]
    assert len(said) == 1, said
    assert "x" * 160 + " +•••••••" in said[0]
    assert "41555" not in said[0]
