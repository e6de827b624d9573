"""A campaign's due list is read DUE_BATCH recipients at a time, and the ones whose fields no
longer read are left out of it: DUE_BATCH of them due before the rest (a hand edit, or rows
another release wrote) made a list of none, every step, and the rest were never called."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from common.campaigns.scheduler import DUE_BATCH
from handlers.keys import CAMPAIGNS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, wait_for
from tests.integration.test_campaigns import all_recipients, due_in_an_hour, us


async def test_a_full_due_list_of_unreadable_recipients_holds_no_other_back(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = [us(n, "7700") for n in range(DUE_BATCH + 1)]
    client, clock, campaign_id = await due_in_an_hour(start_app, "bad rows first", numbers)
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
