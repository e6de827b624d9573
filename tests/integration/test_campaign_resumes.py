"""Pause and resume in a loop: each pair is two events kept a week and sent to the
campaign's webhook; resumes are bounded, pauses and cancels never held back."""

from __future__ import annotations

import datetime as dt

from common.storage.campaign_programs import MAX_RESUMES, RESUMES_WINDOW_S
from tests.conftest import AppFactory
from tests.helpers import ShiftedClock


async def test_a_campaign_resumed_in_a_loop_is_told_to_wait(
    start_app_on_each_database: AppFactory,
) -> None:
    at = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC).timestamp()
    clock = ShiftedClock(at)
    client = await start_app_on_each_database(campaign_clock=clock)
    resp = await client.post(
        "/campaigns",
        json={
            "name": "toggled",
            "recipients": [{"phone_number": "+14155557700"}],
            "start_at": "2026-12-20T15:00:00Z",
        },
    )
    assert resp.status == 201
    control = f"/campaigns/{(await resp.json())['campaign_id']}"
    first_resumed_by = None
    for _ in range(MAX_RESUMES):
        assert (await client.post(f"{control}/pause")).status == 200
        assert (await client.post(f"{control}/resume")).status == 200
        first_resumed_by = first_resumed_by or clock()  # the first resume was at or before
    assert (await client.post(f"{control}/pause")).status == 200  # a pause always goes
    resp = await client.post(f"{control}/resume")
    assert resp.status == 429
    assert 3500 < int(resp.headers["Retry-After"]) <= RESUMES_WINDOW_S
    assert "resumed 20 times in the last hour" in (await resp.json())["error"]
    assert (await client.get(control)).status == 200
    # An hour after the first resume, one more may go (timed from the first resume, not the
    # campaign's creation: the first pause and resume took over 1 s in a loaded run).
    assert first_resumed_by is not None
    clock.move_to(first_resumed_by + RESUMES_WINDOW_S + 1)
    assert (await client.post(f"{control}/resume")).status == 200
    assert (await client.post(f"{control}/pause")).status == 200
    assert (await client.post(f"{control}/cancel")).status == 200  # never held back
