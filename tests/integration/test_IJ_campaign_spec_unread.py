"""A campaign whose spec no longer reads (written by a newer release sharing the database: a
window key this one does not know; or hand-edited) raised out of the scheduler's claim, whose
transaction rolled back: every tick, no campaign was claimed, none started, none of a stopped
server's taken over, whatever their own specs."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
import time

import pytest

from handlers.keys import CAMPAIGNS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, wait_for
from tests.integration.test_campaigns import (
    FAST,
    campaign_of,
    create,
    due_in_an_hour,
    us,
    wait_status,
)


async def test_a_campaign_whose_spec_no_longer_reads_leaves_the_others_to_run(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    window = {"start": "00:00", "end": "24:00"}
    bad, good = [
        await create(
            client,
            {
                "name": name,
                "recipients": [{"phone_number": us(n, "7700")}],
                "start_at": later,
                "window": window,
            },
        )
        for n, name in enumerate(("bad", "good"))
    ]
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        db.execute(
            "UPDATE campaigns SET spec = json_set(spec, '$.window.holidays',"
            " json('[\"2026-12-25\"]')) WHERE campaign_id = ?",
            (bad["campaign_id"],),
        )
    clock.move_to(OPEN_EVERYWHERE + 3601)
    client.app[CAMPAIGNS].scheduler.wake()  # (not its next tick, a second away)
    await wait_status(client, good["campaign_id"], "completed", timeout=20)
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        row = db.execute(
            "SELECT status, claimed_by FROM campaigns WHERE campaign_id = ?",
            (bad["campaign_id"],),
        ).fetchone()
    assert row == ("scheduled", ""), row  # as it was, and held by no server
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith(f"campaign {bad['campaign_id']} no longer reads"), said
    assert "holidays" in said[0], said
    assert (await campaign_of(client, good["campaign_id"]))["status"] == "completed"


async def test_a_recipient_whose_fields_no_longer_read_leaves_the_others_to_be_called(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """It raised out of the driver's read of the due list, each step: none of the campaign's
    recipients was called, and the campaign never ended."""
    numbers = [us(0, "7700"), us(1, "7700")]
    client, clock, campaign_id = await due_in_an_hour(start_app, "one bad row", numbers)
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        db.execute(
            "UPDATE campaign_recipients SET fields = '{\"name\": '"
            " WHERE campaign_id = ? AND idx = 0",
            (campaign_id,),
        )
    clock.move_to(OPEN_EVERYWHERE + 3601)
    client.app[CAMPAIGNS].scheduler.wake()  # (not its next tick, a second away)

    async def second_called() -> bool:
        return [d.number for d in client.app[SANDBOX].dials] == [numbers[1]]

    await wait_for(second_called, timeout=20)
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        (state,) = db.execute(
            "SELECT state FROM campaign_recipients WHERE campaign_id = ? AND idx = 0",
            (campaign_id,),
        ).fetchone()
    assert state == "pending"  # kept, for an operator to mend
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith(f"campaign {campaign_id}: recipient 0 (row 0)"), said
    assert (await campaign_of(client, campaign_id))["status"] == "running"  # a 200


async def test_a_campaign_whose_spec_no_longer_reads_leaves_the_server_to_start(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With CALLS_WEBHOOK_URL set, the start points the campaigns with no webhook_url of
    their own at it, reading each one's spec: one that no longer read stopped the start,
    every start, whatever the other campaigns."""
    url = "http://127.0.0.1:9/hooks"
    first = await start_app(calls_webhook_url=url, calls_webhook_allow_private=True)
    later = dt.datetime.fromtimestamp(time.time() + 3600, dt.UTC).isoformat()
    body = {"recipients": [{"phone_number": us(0, "7700")}], "start_at": later}
    bad = await create(first, {**body, "name": "bad"})
    good = await create(first, {**body, "name": "good"})
    with sqlite3.connect(first.app[SETTINGS].calls_db_path) as db:
        db.execute(
            "UPDATE campaigns SET spec = '{\"defaults\": ', webhook_url = NULL"
            " WHERE campaign_id = ?",
            (bad["campaign_id"],),
        )
        db.execute("UPDATE campaigns SET webhook_url = NULL")  # as if webhooks were off
    second = await start_app(  # the same database: a restart with CALLS_WEBHOOK_URL set
        calls_webhook_url=url, calls_webhook_allow_private=True
    )
    with sqlite3.connect(second.app[SETTINGS].calls_db_path) as db:
        rows = dict(db.execute("SELECT campaign_id, webhook_url FROM campaigns").fetchall())
    assert rows == {bad["campaign_id"]: None, good["campaign_id"]: url}, rows
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and said[0].startswith(f"campaign {bad['campaign_id']} no longer")
