"""A campaign waiting for its calling window (or a retry's time) with none of its calls live
reads nothing until then: its driver looked again every IDLE_WAIT_S (three queries each), and
2,000 such campaigns took 43% of the server's one thread (HU's probe: /healthz 116 ms at p90,
471 ms at worst, on a server doing nothing else). It still calls once the window opens."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from common.campaigns import scheduler as campaign_scheduler
from handlers.keys import STORE
from tests.conftest import AppFactory
from tests.helpers import ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, create, wait_status

# 15:00 UTC on a Wednesday: 07:00 in California, before a 09:00-20:00 window opens there.
MORNING_IN_NEW_YORK = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC).timestamp()
NINE_IN_CALIFORNIA = dt.datetime(2026, 12, 2, 17, 0, 1, tzinfo=dt.UTC).timestamp()
READS = ("open_attempts", "due_recipients", "complete_if_done", "next_due_at")


async def test_a_campaign_waiting_for_its_window_reads_nothing_until_it_opens(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(campaign_scheduler, "IDLE_WAIT_S", 0.02)  # 25 looks in half a second
    clock = ShiftedClock(MORNING_IN_NEW_YORK)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "before the window",
            "recipients": [{"phone_number": "+14155557700"}],  # California
            "window": {"start": "09:00", "end": "20:00", "timezone": "recipient"},
        },
    )
    campaign_id = created["campaign_id"]

    async def waiting() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        return bool(row["state"] == "waiting_window")

    await wait_for(waiting)
    store = client.app[STORE]
    reads: Counter[str] = Counter()

    def counted(name: str) -> Callable[..., Awaitable[Any]]:
        real = getattr(store, name)

        async def read(*args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return await real(*args, **kwargs)

        return read

    for name in READS:
        monkeypatch.setattr(store, name, counted(name))
    await asyncio.sleep(0.5)
    # The look that deferred it may end after it is seen deferred, and the next finds nobody
    # due and reads when somebody is: then none (63 reads in this half second before).
    assert sum(reads.values()) <= 2 * len(READS), reads

    clock.move_to(NINE_IN_CALIFORNIA)  # the window opens: called within the driver's look
    campaign = await wait_status(client, campaign_id, "completed", timeout=30)
    assert campaign["counts"]["completed"] == 1
