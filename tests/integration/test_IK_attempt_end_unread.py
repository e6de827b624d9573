"""A campaign call that ends after its campaign's spec no longer reads (a hand edit, or a newer
release's window key, while the call was live): the end of its attempt read the spec (its
retry policy, its window) and raised, in the campaigns' subscriber of call.ended, every time
the event was given: the attempt never ended, its recipient stayed `calling` (holding one of
the campaign's concurrent calls) and the campaign never completed."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from common.calls.events import CALL_DIALING
from common.calls.models import CallEvent
from handlers.keys import EVENTS, SETTINGS
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, create, us, wait_status


async def test_a_call_ending_after_its_campaigns_spec_no_longer_reads_ends_its_attempt(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    path = client.app[SETTINGS].calls_db_path

    async def spec_edited_as_it_is_dialled(event: CallEvent) -> None:
        # (before its call.ended, which this server's dispatcher gives after this one)
        if event.type == CALL_DIALING:
            with sqlite3.connect(path) as db:
                db.execute(
                    "UPDATE campaigns SET spec = json_set(spec, '$.window.holidays',"
                    " json('[\"2026-12-25\"]'))"
                )

    client.app[EVENTS].subscribe("hand edit", spec_edited_as_it_is_dialled)
    created = await create(  # busy: retried on busy by default, were the spec read
        client,
        {
            "name": "edited while calling",
            "recipients": [{"phone_number": us(0, "0486")}],
            "window": {"start": "00:00", "end": "24:00"},
        },
    )
    shown = await wait_status(client, created["campaign_id"], "completed", timeout=10)
    assert "holidays" in shown["unreadable"], shown
    [recipient] = await all_recipients(client, created["campaign_id"])
    assert recipient["state"] == "busy", recipient  # its attempt's end kept; no retry
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    ended = [s for s in said if "not tried again" in s]
    assert len(ended) == 1 and "holidays" in ended[0], said


async def test_a_call_ending_after_its_recipients_fields_no_longer_read_ends_its_attempt(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The retry of a busy recipient read its fields (its own time zone) for its window, and
    raised alike."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    path = client.app[SETTINGS].calls_db_path

    async def fields_edited_as_it_is_dialled(event: CallEvent) -> None:
        if event.type == CALL_DIALING:
            with sqlite3.connect(path) as db:
                db.execute("UPDATE campaign_recipients SET fields = '{\"name\": '")

    client.app[EVENTS].subscribe("hand edit", fields_edited_as_it_is_dialled)
    created = await create(
        client,
        {
            "name": "edited while calling",
            "recipients": [{"phone_number": us(0, "0486")}],
            "window": {"start": "00:00", "end": "24:00"},
        },
    )

    async def its_attempt_ended() -> bool:
        [recipient] = await all_recipients(client, created["campaign_id"])
        return bool([a["status"] for a in recipient["attempts"]] == ["busy"])

    await wait_for(its_attempt_ended, timeout=10)
    [recipient] = await all_recipients(client, created["campaign_id"])
    assert recipient["state"] == "pending", recipient  # its retry, as any busy one's
    failed = [r.getMessage() for r in caplog.records if "failed in subscriber" in r.getMessage()]
    assert failed == []
