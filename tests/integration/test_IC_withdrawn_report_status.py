"""A campaign's call withdrawn by a pause before its dial: nobody was called, and no
conversation will be reported, yet GET /calls/{id} read `report_status: "pending"` for
10 minutes (REPORT_WAIT_S). It reads `unavailable` at once, as a call no agent can report
on does."""

from __future__ import annotations

import pytest

from tests.conftest import AppFactory
from tests.integration.test_campaigns import one_call_slow_to_dispatch, paused_before_its_dial


async def test_a_call_withdrawn_by_a_pause_waits_for_no_report(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, campaign_id, dispatch = await one_call_slow_to_dispatch(
        start_app, monkeypatch, {"on": [], "max_attempts": 1}
    )
    call_id = await paused_before_its_dial(client, campaign_id, dispatch)
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "failed" and "not dialled" in call["reason"], call
    assert call["report_status"] == "unavailable", call
