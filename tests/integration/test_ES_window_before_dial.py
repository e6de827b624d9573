"""A campaign call whose recipient's calling window closes while the call is being set up
(its config.json write stalled, its agent's dispatch slow: up to ~35 s in all) is not
dialled: the window is asked again as its dial is marked, as the pause and the do-not-call
list are, and the recipient waits for the window's next opening, nobody called."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.calls.service import WINDOW_CLOSED_WHILE_PLACING
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, hold_config_write, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, create, wait_status

NUMBER = "+14152007700"  # California; the sandbox completes its calls
# 20:00:05 in California: five seconds after the campaign's window (09:00-20:00) closed.
CLOSED = dt.datetime(2026, 12, 3, 4, 0, 5, tzinfo=dt.UTC).timestamp()
NEXT_OPENING = "2026-12-03T17:00:00.000Z"  # 09:00 in California, the next morning
MORNING = dt.datetime(2026, 12, 3, 17, 0, 1, tzinfo=dt.UTC).timestamp()


async def _deferred_not_dialled(client: TestClient[Any, Any], campaign_id: str) -> None:
    """Nobody was called; the recipient waits for its window's next opening, the attempt
    shows not_dialled (it counts towards nothing), its call says why."""
    sandbox = client.app[SANDBOX]

    async def settled() -> bool:  # its attempt ended, or (the defect) the number dialled
        (row,) = await all_recipients(client, campaign_id)
        ended = row["attempts"] and row["attempts"][-1]["status"] is not None
        return bool(ended and row["state"] != "calling" or sandbox.dials)

    await wait_for(settled, timeout=10)
    assert [d.number for d in sandbox.dials] == []
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "waiting_window", row
    assert row["next_attempt_at"] == NEXT_OPENING
    assert [a["status"] for a in row["attempts"]] == ["not_dialled"]
    call = await (await client.get(f"/calls/{row['attempts'][0]['call_id']}")).json()
    assert (call["status"], call["reason"]) == ("failed", WINDOW_CLOSED_WHILE_PLACING)


async def test_a_dispatch_that_ends_after_the_window_closed_is_not_dialled(
    start_app_on_each_database: AppFactory,
) -> None:
    """The window was open as the call was begun; LiveKit took its agent's dispatch past
    20:00 in California, and the number was dialled then, after its window and the legal
    floor's end. Now it is not; the next morning it is called."""
    clock = ShiftedClock(OPEN_EVERYWHERE)  # 10:00 in California
    client = await start_app_on_each_database(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    sandbox = client.app[SANDBOX]

    def slow_dispatch(body: dict[str, Any]) -> bool:
        clock.move_to(CLOSED)  # the dispatch answered once the window had closed
        return True

    sandbox.inject("CreateDispatch", times=1, when=slow_dispatch)
    created = await create(client, {"name": "closing", "recipients": [{"phone_number": NUMBER}]})
    campaign_id = created["campaign_id"]
    await _deferred_not_dialled(client, campaign_id)

    clock.move_to(MORNING)
    await wait_status(client, campaign_id, "completed", timeout=30)
    (row,) = await all_recipients(client, campaign_id)
    assert row["state"] == "completed"
    assert [a["status"] for a in row["attempts"]] == ["not_dialled", "completed"]
    assert [d.number for d in sandbox.dials] == [NUMBER]


async def test_a_config_write_stalled_past_the_window_is_not_dialled(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json's write held by a stalled disk until the window had closed: the call went
    on to its dispatch and dial once the write landed."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    held = hold_config_write(monkeypatch, b"Stalled Sam")
    created = await create(
        client,
        {
            "name": "stalled",
            "defaults": {"name": "Stalled Sam"},
            "recipients": [{"phone_number": NUMBER}],
        },
    )
    assert await asyncio.to_thread(held.held.wait, 10)
    clock.move_to(CLOSED)
    held.go.set()
    await _deferred_not_dialled(client, created["campaign_id"])
