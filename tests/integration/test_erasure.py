"""Erasure on request, through the real app and the sandbox: POST /calls/{call_id}/erase (one
call) and POST /calls/erase (every call to a number), what they erase, what they refuse."""

from __future__ import annotations

import sqlite3
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.keys import EVENTS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES

Client = TestClient[Any, Any]
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCALE = 0.05  # the sandbox at 20x: an answered call lasts ~0.7 s
ALICE = dict(SEED_EXAMPLES[0], first_message="Hello Alice Smith")
FIRST = {"voicemail": {"action": "leave_message", "message": "Alice Smith, call us back"}}


async def placed(client: Client, body: dict[str, Any]) -> str:
    resp = await client.post("/calls/outbound", json=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    call_id: str = (await resp.json())["call_id"]
    return call_id


async def settled(client: Client, body: dict[str, Any]) -> str:
    call_id = await placed(client, body)
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    return call_id


def kept_in_database(client: Client) -> str:
    """Every row of the tables that hold a call's data, as text."""
    with sqlite3.connect(client.app[SETTINGS].calls_db_path) as db:
        tables = ("calls", "reports", "events", "outbox")
        return repr([list(db.execute(f"SELECT * FROM {t}")) for t in tables])  # noqa: S608


async def test_a_call_erased_on_request_keeps_nothing_of_its_callee_but_the_number(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    call_id = await settled(client, dict(ALICE, **FIRST))
    before = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert before["status"] == "completed" and before["transcript"]
    assert "Alice Smith" in kept_in_database(client)
    assert (await client.post(f"/calls/{call_id}/erase")).status == 401

    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["status"] == "success"
    assert (answer["erased"], answer["call_ids"]) == (1, [call_id])
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["personal_data_erased_at"] == answer["personal_data_erased_at"] is not None
    assert call["transcript"] == [] and call["summary"] is None and call["name"] == ""
    assert call["config"]["caller_name"] == "" and call["config"]["agent_instructions"] == ""
    assert "first_message" not in call["config"]
    assert call["config"]["voicemail"] == {"action": "leave_message"}
    for field in ("status", "phone_number", "answered_at", "ended_at", "talk_s", "amd"):
        assert call[field] == before[field]
    assert "Alice Smith" not in kept_in_database(client)
    assert "cricket coach" not in kept_in_database(client)
    # Again: the same answer (nothing is left to erase), a new time.
    again = await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    assert again.status == 200 and (await again.json())["call_ids"] == [call_id]


async def test_erasing_an_unknown_call_is_404_and_a_get_of_the_route_405(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    resp = await client.post("/calls/call-00000000dead/erase", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "unknown call"
    resp = await client.get("/calls/erase", headers=AUTH)
    assert resp.status == 405 and resp.headers["Allow"] == "POST"


async def test_a_live_call_is_not_erased_until_it_has_ended(start_app: AppFactory) -> None:
    """Its conversation is still coming: 409 naming it, nothing erased; once it ended, the
    erasure goes through."""
    client = await start_app(sandbox_time_scale=1.0, calls_api_token=TOKEN)
    call_id = await placed(client, ALICE)

    for path, body in ((f"/calls/{call_id}/erase", None), ("/calls/erase", ALICE)):
        json = {"phone_number": body["phone_number"]} if body else None
        resp = await client.post(path, json=json, headers=AUTH)
        assert resp.status == 409, await resp.text()
        error = (await resp.json())["error"]
        assert call_id in error and "still live" in error and "nothing erased" in error
    assert "Alice Smith" in kept_in_database(client)

    assert (await client.post(f"/calls/{call_id}/hangup", headers=AUTH)).status == 200
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert "Alice Smith" not in kept_in_database(client)


async def test_erasing_a_number_erases_every_call_to_it_and_no_other(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    first = await settled(client, ALICE)
    other = await settled(client, SEED_EXAMPLES[1])
    second = await settled(client, dict(ALICE, phone_number="+1 (234) 567-890"))

    resp = await client.post("/calls/erase", json={"phone_number": "+1234567890"}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert (answer["erased"], answer["call_ids"]) == (2, [first, second])
    assert "Alice Smith" not in kept_in_database(client)
    assert "Carlos" in kept_in_database(client)
    kept = await (await client.get(f"/calls/{other}", headers=AUTH)).json()
    assert kept["name"] == "Carlos García" and kept["personal_data_erased_at"] is None
    # A number no call went to: nothing to erase, and it says so.
    resp = await client.post("/calls/erase", json={"phone_number": "+14155550100"}, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {
        "status": "success",
        "erased": 0,
        "call_ids": [],
        "personal_data_erased_at": None,
    }


async def test_an_erasure_of_a_number_says_what_is_wrong_with_its_body(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    for body, field in (
        ({"phone_number": "14155550100x"}, "phone_number"),
        ({}, "phone_number"),
        ({"phone_number": "+14155550100", "name": "Ann"}, "name"),
        ([], "phone_number"),
    ):
        resp = await client.post("/calls/erase", json=body, headers=AUTH)
        assert resp.status == 422, (body, await resp.text())
        assert [d["field"] for d in (await resp.json())["details"]] == [field]
    assert (await client.post("/calls/erase", headers=AUTH)).status == 400  # no body
    resp = await client.post("/calls/erase?phone_number=%2B14155550100", json={}, headers=AUTH)
    assert resp.status == 400
