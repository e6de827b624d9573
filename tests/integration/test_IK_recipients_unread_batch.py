"""A campaign's due list is read DUE_BATCH recipients at a time, and the ones whose fields no
longer read are left out of it: DUE_BATCH of them due before the rest (a hand edit, or rows
another release wrote) made a list of none, every step, and the rest were never called."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3

import pytest

from common.campaigns.scheduler import DUE_BATCH
from common.repeats import Repeats
from common.storage import campaign_programs
from handlers.keys import CAMPAIGNS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, create, us


async def test_a_full_due_list_of_unreadable_recipients_holds_no_other_back(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_programs, "_UNREADABLE", Repeats())  # none said yet here
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    numbers = [us(n, "7700") for n in range(DUE_BATCH + 1)]
    created = await create(
        client,
        {
            "name": "bad rows first",
            "recipients": [{"phone_number": n, "name": "Ana"} for n in numbers],
            "start_at": later,
            "window": {"start": "00:00", "end": "24:00"},
        },
    )
    campaign_id = created["campaign_id"]
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        db.execute(
            "UPDATE campaign_recipients SET fields = '{\"name\": '"
            " WHERE campaign_id = ? AND idx < ?",
            (campaign_id, DUE_BATCH),
        )
    clock.move_to(OPEN_EVERYWHERE + 3601)
    client.app[CAMPAIGNS].scheduler.wake()  # (not its next tick, a second away)

    async def last_called() -> bool:
        return [d.number for d in client.app[SANDBOX].dials] == numbers[-1:]

    await wait_for(last_called, timeout=20)
    shown = await all_recipients(client, campaign_id)
    assert [r["state"] for r in shown[:DUE_BATCH]] == ["pending"] * DUE_BATCH  # kept
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith(f"campaign {campaign_id}: recipient 0 (row 0) no longer reads")
