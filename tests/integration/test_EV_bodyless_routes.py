"""An API write that takes no body (a campaign's pause, resume and cancel, a hang-up, an
erasure of one call, DELETE /dnc/{number}, a redelivery) refuses one that says something,
400 and nothing done, as it refuses a query parameter: `POST /campaigns/{id}/cancel
{"recipients": [1]}` (a client meaning to cancel one recipient) canceled all three of the
campaign's recipients for good, answered 200. An empty body, `{}` and `null` say nothing."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import AppFactory

ROWS = [{"phone_number": f"+1415555230{i}"} for i in range(1, 4)]
LISTED = "+14155552309"


def _start_at() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400))


async def _campaign(client: Any) -> str:
    resp = await client.post(
        "/campaigns", json={"name": "bodies", "recipients": ROWS, "start_at": _start_at()}
    )
    assert resp.status == 201, await resp.text()
    campaign_id: str = (await resp.json())["campaign_id"]
    return campaign_id


async def _status(client: Any, campaign_id: str) -> tuple[str, dict[str, int]]:
    campaign = (await (await client.get(f"/campaigns/{campaign_id}")).json())["campaign"]
    return campaign["status"], campaign["counts"]


async def test_a_cancel_with_a_body_is_refused_and_cancels_nothing(start_app: AppFactory) -> None:
    client = await start_app()
    campaign_id = await _campaign(client)
    before = await _status(client, campaign_id)
    assert before[0] == "scheduled"
    for body in ({"json": {"recipients": [1]}}, {"data": "recipient=1"}, {"json": [1]}):
        resp = await client.post(f"/campaigns/{campaign_id}/cancel", **body)
        assert resp.status == 400, await resp.text()
        answer = await resp.json()
        assert answer["status"] == "error"
        assert answer["error"].startswith("this route takes no body")
        assert "nothing was done" in answer["error"]
    # Longer than what is read of one: said alike, not as too large.
    resp = await client.post(f"/campaigns/{campaign_id}/pause", json={"note": "x" * 5000})
    assert resp.status == 400
    assert (await resp.json())["error"].startswith("this route takes no body")
    assert await _status(client, campaign_id) == before


async def test_bodies_that_say_nothing_are_taken(start_app: AppFactory) -> None:
    client = await start_app()
    campaign_id = await _campaign(client)
    resp = await client.post(f"/campaigns/{campaign_id}/pause", json={})
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"/campaigns/{campaign_id}/resume",
        data=" null ",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(f"/campaigns/{campaign_id}/cancel", data=b"")
    assert resp.status == 200, await resp.text()
    assert (await _status(client, campaign_id))[0] == "canceled"


async def test_other_routes_that_take_none_refuse_one(start_app: AppFactory) -> None:
    client = await start_app()
    assert (await client.post("/dnc", json={"numbers": [LISTED]})).status == 200
    resp = await client.delete(f"/dnc/%2B{LISTED[1:]}", json={"numbers": ["+14155552308"]})
    assert resp.status == 400
    listed = await (await client.get("/dnc")).json()
    assert [e["phone_number"] for e in listed["numbers"]] == [LISTED]  # still listed
    for path in ("/calls/call-000000000000/hangup", "/calls/call-000000000000/erase"):
        resp = await client.post(path, json={"phone_number": LISTED})
        assert resp.status == 400, path
    # Without one, as before.
    resp = await client.delete(f"/dnc/%2B{LISTED[1:]}")
    assert resp.status == 200
    assert (await client.post("/calls/call-000000000000/erase")).status == 404
