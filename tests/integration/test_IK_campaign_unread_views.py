"""A campaign whose spec no longer reads (a window key a newer release added, or a hand edit)
failed every read of it as the API shows it: GET /campaigns answered 500 whole, whatever the
other campaigns, and its own page, its pause, resume and cancel and its deliveries 500 too."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from typing import Any

import schemathesis

from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import create, us


async def test_a_campaign_whose_spec_no_longer_reads_is_shown_and_controlled(
    start_app: AppFactory,
) -> None:
    # Its California recipient is pending an hour ahead only when 09:00-20:00 is open there
    # then: on the real clock, between 03:00 and 16:00 UTC it waited its window instead.
    clock = ShiftedClock(OPEN_EVERYWHERE)
    client = await start_app(campaign_clock=clock)
    later = dt.datetime.fromtimestamp(clock() + 3600, dt.UTC).isoformat()
    body = {"recipients": [{"phone_number": us(0, "7700")}], "start_at": later}
    bad = await create(client, {**body, "name": "bad"})
    good = await create(client, {**body, "name": "good"})
    bad_id = bad["campaign_id"]
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        db.execute(
            "UPDATE campaigns SET spec = json_set(spec, '$.window.holidays',"
            " json('[\"2026-12-25\"]')) WHERE campaign_id = ?",
            (bad_id,),
        )
    schema = schemathesis.openapi.from_dict(await (await client.get("/openapi.json")).json())
    base_url = str(client.make_url("")).rstrip("/")

    def conforming(path: str, method: str, **parameters: str) -> dict[str, Any]:
        """Its answer, 200 and as /openapi.json documents it."""
        case = schema[path][method].Case(path_parameters=parameters or None)
        response = case.call(base_url=base_url, timeout=30)
        assert response.status_code == 200, (method, path, response.text)
        case.validate_response(response)
        shown: dict[str, Any] = response.json()
        return shown

    listed = await asyncio.to_thread(conforming, "/campaigns", "GET")
    by_id = {c["campaign_id"]: c for c in listed["campaigns"]}
    assert set(by_id) == {bad_id, good["campaign_id"]}
    shown = by_id[bad_id]
    assert shown["unreadable"].startswith("campaigns.spec: "), shown
    assert "holidays" in shown["unreadable"], shown
    assert (shown["name"], shown["status"], shown["total"]) == ("bad", "scheduled", 1)
    assert shown["counts"]["pending"] == 1
    assert shown["window"] is shown["pacing"] is shown["next_call_at"] is None
    assert "unreadable" not in by_id[good["campaign_id"]]
    assert by_id[good["campaign_id"]]["window"]["start"] == "09:00"
    path = "/campaigns/{campaign_id}"
    page = await asyncio.to_thread(conforming, path, "GET", campaign_id=bad_id)
    assert page["campaign"] == shown
    for action, status in (("pause", "paused"), ("resume", "scheduled"), ("cancel", "canceled")):
        answer = await asyncio.to_thread(
            conforming, f"/campaigns/{{campaign_id}}/{action}", "POST", campaign_id=bad_id
        )
        assert answer["campaign"]["status"] == status, answer
        assert "holidays" in answer["campaign"]["unreadable"]
    assert (await client.get(f"/campaigns/{bad_id}/recipients")).status == 200
    deliveries = await client.get(f"/campaigns/{bad_id}/deliveries")
    assert deliveries.status == 200, await deliveries.text()
    recipients = await (await client.get(f"/campaigns/{bad_id}/recipients")).json()
    assert [r["state"] for r in recipients["recipients"]] == ["canceled"]
