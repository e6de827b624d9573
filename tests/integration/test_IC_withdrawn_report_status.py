"""A campaign's call withdrawn by a pause before its dial: nobody was called, and no
conversation will be reported, yet GET /calls/{id} read `report_status: "pending"` for
10 minutes (REPORT_WAIT_S). It reads `unavailable` at once, as a call no agent can report
on does."""

from __future__ import annotations

import pytest

from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_campaigns import all_recipients, one_call_slow_to_dispatch


async def test_a_call_withdrawn_by_a_pause_waits_for_no_report(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, campaign_id, dispatch = await one_call_slow_to_dispatch(
        start_app, monkeypatch, {"on": [], "max_attempts": 1}
    )
    placing: list[str] = []

    async def has_call() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        placing[:] = [a["call_id"] for a in row["attempts"] if a["call_id"]][:1]
        return bool(placing)

    await wait_for(has_call)  # recorded, its dispatch on its way
    assert (await client.post(f"/campaigns/{campaign_id}/pause")).status == 200
    dispatch.release()

    async def given_back() -> bool:
        (row,) = await all_recipients(client, campaign_id)
        return bool(row["state"] == "pending")

    await wait_for(given_back, timeout=10)
    call = await (await client.get(f"/calls/{placing[0]}")).json()
    assert call["status"] == "failed" and "not dialled" in call["reason"], call
    assert call["report_status"] == "unavailable", call
