"""An attempt left being placed (a config.json write failing, a crash between its row and
its call) is placed again by the recovery pass: only inside its recipient's calling window."""

from __future__ import annotations

import datetime as dt

import pytest

from common.campaigns import scheduler
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, FullDisk, ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, create

CALIFORNIA = "+14155557700"
# 22:00 in California that evening: outside the 09:00-20:00 window and 08:00-21:00.
NIGHT = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC).timestamp()


async def test_an_attempt_placed_again_after_its_window_closed_waits_for_it(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json could not be written as the attempt was placed (a full disk at 10:00 in
    California); the disk was freed at 22:00 there, and the recovery pass dialled the
    number then, hours outside its window. It now waits for the window (09:00)."""
    monkeypatch.setattr(scheduler, "RECOVER_EVERY_S", 0.1)
    clock = ShiftedClock(OPEN_EVERYWHERE)  # 10:00 in California
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    disk = FullDisk()
    disk.refuse_placements(client)
    created = await create(client, {"name": "night", "recipients": [{"phone_number": CALIFORNIA}]})
    campaign_id = created["campaign_id"]

    await disk.tried(1)
    clock.move_to(NIGHT)
    disk.full = False

    async def settled() -> bool:  # waiting for its window, or (the defect) called
        (row,) = await all_recipients(client, campaign_id)
        return row["state"] not in ("calling", "pending") or bool(client.app[SANDBOX].dials)

    await wait_for(settled, timeout=10)
    assert [d.number for d in client.app[SANDBOX].dials] == []
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "waiting_window", row
    assert row["next_attempt_at"] == "2026-12-03T17:00:00.000Z"  # 09:00 in California
    assert row["attempts"] == []
