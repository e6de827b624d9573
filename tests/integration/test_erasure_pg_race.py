"""Erasing a number and canceling the campaigns that list it, at once, on PostgreSQL through
the real app: an erasure locks the number's recipients (campaign, recipient) in order, in a
transaction of its own, then its calls; a cancel locks its campaign, then its recipients.
Neither may deadlock the other (PostgreSQL's error: a 503)."""

from __future__ import annotations

import asyncio
import datetime as dt

from handlers.keys import EVENTS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANN = "+14155557700"


async def test_erasing_a_number_and_canceling_its_campaigns_at_once(
    postgres_dsn: str, start_app: AppFactory
) -> None:
    """The database set up first: the app stops before it is dropped."""
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(
        sandbox_time_scale=0.05,
        calls_api_token=TOKEN,
        campaign_clock=clock,
        database_url=postgres_dsn,
    )
    later = dt.datetime.fromtimestamp(OPEN_EVERYWHERE + 3600, dt.UTC).isoformat()
    statuses = []
    for round_ in range(4):
        resp = await client.post(
            "/calls/outbound", json={"phone_number": ANN, "name": "Ann Lee"}, headers=AUTH
        )
        assert resp.status == 200, await resp.text()
        await client.app[SANDBOX].wait_idle(15)
        await client.app[EVENTS].wait_idle()
        ids = []
        for c in range(3):
            numbers = [f"+1650{200 + c}{n:04d}" for n in range(600)]
            numbers.insert(round_ * 40, ANN)
            numbers.append(ANN)  # given twice: kept `invalid`, with the number
            rows = "".join(f"{n},Person {i}\n" for i, n in enumerate(numbers))
            resp = await client.post(
                "/campaigns",
                params={"name": f"r{round_}c{c}", "start_at": later, "invalid_rows": "skip"},
                data=f"phone_number,name\n{rows}".encode(),
                headers={**AUTH, "Content-Type": "text/csv"},
            )
            assert resp.status == 201, await resp.text()
            ids.append((await resp.json())["campaign_id"])

        async def cancel(campaign_id: str) -> int:
            resp = await client.post(f"/campaigns/{campaign_id}/cancel", headers=AUTH)
            return resp.status

        async def erase() -> int:
            resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)
            return resp.status

        answered = await asyncio.gather(cancel(ids[0]), erase(), cancel(ids[2]), cancel(ids[1]))
        statuses.append(list(answered))
    assert all(s == [200] * 4 for s in statuses), statuses
