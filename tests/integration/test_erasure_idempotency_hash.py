"""An erased call's Idempotency-Key kept the SHA-256 of the request it came with, name and
instructions included (until the key's record expired): whoever holds the database could
confirm a guess of them against it. The erasure replaces it; a retry under the key still
gets the call's answer (it holds no data), never a second call."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from typing import Any

from aiohttp.test_utils import TestClient

from common.calls.models import ERASED_REQUEST_HASH, canonical_json
from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_erasure import ALICE, ANN, AUTH, BOB, LATER, SCALE, TOKEN, settled

KEY = {"Idempotency-Key": "order-1234-call"}


def request_hashes(client: TestClient[Any, Any]) -> list[str]:
    with contextlib.closing(sqlite3.connect(client.app[SETTINGS].calls_db_path)) as db, db:
        return [row[0] for row in db.execute("SELECT request_hash FROM idempotency")]


async def test_an_erased_calls_key_keeps_no_hash_of_its_request_and_still_answers(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    resp = await client.post("/calls/outbound", json=ALICE, headers={**AUTH, **KEY})
    assert resp.status == 200, await resp.text()
    first = await resp.json()
    guess = hashlib.sha256(canonical_json(ALICE)).hexdigest()
    assert request_hashes(client) == [guess]  # what a guess of the request was checked against
    await settled(client, {**ALICE, "phone_number": "+14155550123"})  # the first has ended too
    erased = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )
    assert erased.status == 200, await erased.text()
    assert request_hashes(client) == [ERASED_REQUEST_HASH]

    again = await client.post("/calls/outbound", json=ALICE, headers={**AUTH, **KEY})
    assert again.status == 200, await again.text()
    assert (await again.json())["call_id"] == first["call_id"]  # no second call


async def test_a_campaigns_key_keeps_no_hash_of_an_erased_recipients_row(
    start_app: AppFactory,
) -> None:
    """A campaign's Idempotency-Key kept the SHA-256 of the upload, every row in it, after a
    recipient's erasure by number: the other rows, the options and the number stay in the
    database, so a guess of the erased name and fields was confirmed against it, as a call's
    was. The erasure replaces it; a retry under the key still gets the campaign, not a
    second one."""
    clock = ShiftedClock(OPEN_EVERYWHERE)  # its recipients wait for start_at, an hour on
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN, campaign_clock=clock)
    campaign = {
        "name": "Reminders",
        "start_at": LATER,
        "recipients": [
            {"phone_number": ANN, "name": "Ann Lee-Marsh", "additional_params": {"dob": "1961"}},
            {"phone_number": BOB, "name": "Bob Ray"},
        ],
    }
    headers = {**AUTH, "Idempotency-Key": "reminders-1"}
    resp = await client.post("/campaigns", json=campaign, headers=headers)
    assert resp.status == 201, await resp.text()
    campaign_id = (await resp.json())["campaign_id"]
    guess = hashlib.sha256(canonical_json(campaign) + b"\0").hexdigest()
    assert request_hashes(client) == [guess]

    resp = await client.post("/calls/erase", json={"phone_number": ANN}, headers=AUTH)

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["recipients_erased"] == 1
    assert request_hashes(client) == [ERASED_REQUEST_HASH]
    again = await client.post("/campaigns", json=campaign, headers=headers)
    assert again.status == 201 and again.headers["Idempotent-Replay"] == "1"
    assert (await again.json())["campaign_id"] == campaign_id
