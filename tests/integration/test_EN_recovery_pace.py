"""Attempts left being placed are placed again at the campaign's pace, not all at once."""

from __future__ import annotations

import pytest

from common.campaigns import scheduler
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, FullDisk, ShiftedClock
from tests.integration.test_campaigns import FAST, create, us, wait_status


async def test_attempts_left_being_placed_are_placed_again_at_the_pace(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "RECOVER_EVERY_S", 0.1)
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    disk = FullDisk()
    disk.refuse_placements(client)
    created = await create(
        client,
        {
            "name": "burst",
            "recipients": [{"phone_number": us(n, "7700")} for n in range(4)],
            "pacing": {"calls_per_second": 2, "max_concurrent": 4},
        },
    )

    await disk.tried(4)
    disk.full = False
    await wait_status(client, created["campaign_id"], "completed", timeout=20)
    starts = sorted(d.started for d in client.app[SANDBOX].dials)
    assert len(starts) == 4
    # 4 calls at 2/s: 1.5 s from the first to the last (less a placing's jitter), where the
    # recovery pass placed them all at once (21 ms)
    assert starts[-1] - starts[0] >= 0.9, starts
