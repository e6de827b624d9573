"""A recipient whose fields no longer read (a hand edit, or another release's row) while its
attempt is being placed: every read of the campaign's open attempts parsed the fields of
those being placed, and raised. Left so by a crash (or a placing that failed to be recorded),
it failed each of the driver's steps and its recovery pass: none of the campaign's other
recipients was called again, and the campaign never ended."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from handlers.keys import CAMPAIGNS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, wait_for
from tests.integration.test_campaigns import due_in_an_hour, us


@pytest.mark.parametrize("fields", ['{"name": ', '["Ana"]'], ids=["cut short", "no object"])
async def test_a_recipient_being_placed_whose_fields_no_longer_read_holds_no_other(
    start_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    fields: str,
) -> None:
    numbers = [us(0, "7700"), us(1, "7700")]
    client, clock, campaign_id = await due_in_an_hour(
        start_app, "one bad row being placed", numbers
    )
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        # As a server stopped mid-placing leaves it: the attempt written, no call recorded.
        db.execute(
            "UPDATE campaign_recipients SET state = 'calling', attempts = 1, fields = ?"
            " WHERE campaign_id = ? AND idx = 0",
            (fields, campaign_id),
        )
        db.execute(
            "INSERT INTO campaign_attempts (campaign_id, idx, attempt, state, created_at)"
            " VALUES (?, 0, 1, 'placing', ?)",
            (campaign_id, OPEN_EVERYWHERE),
        )
        db.execute("UPDATE campaigns SET placed = 1 WHERE campaign_id = ?", (campaign_id,))
    clock.move_to(OPEN_EVERYWHERE + 3601)
    client.app[CAMPAIGNS].scheduler.wake()  # (not its next tick, a second away)

    async def second_called() -> bool:
        return [d.number for d in client.app[SANDBOX].dials] == [numbers[1]]

    await wait_for(second_called, timeout=20)
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        left = db.execute(
            "SELECT r.state, r.attempts, COUNT(a.idx) FROM campaign_recipients r"
            " LEFT JOIN campaign_attempts a ON a.campaign_id = r.campaign_id AND a.idx = r.idx"
            " WHERE r.campaign_id = ? AND r.idx = 0",
            (campaign_id,),
        ).fetchone()
    assert left == ("pending", 0, 0), left  # given back, kept for an operator to mend
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith(f"campaign {campaign_id}: recipient 0 (row 0) no longer reads")
    page = await client.get(f"/campaigns/{campaign_id}/recipients")
    assert page.status == 200, await page.text()
    shown = (await page.json())["recipients"][0]
    assert shown["state"] == "pending" and shown["errors"][0]["field"] == "row", shown
    assert shown["errors"][0]["error"].startswith("its stored row no longer reads"), shown
