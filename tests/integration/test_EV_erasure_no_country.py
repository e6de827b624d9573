"""A row skipped for its language (a name from a column shifted, which its error quotes)
whose number is well formed but no country's ("+999 555 0100 22", refused for that too) kept
its number as written, spaces and all: POST /calls/erase of that very number (looked up
without its separators, as the route takes such numbers) found no recipient
(recipients_erased 0) and the error kept 'Bob Ray' for good. It is kept as the erasure looks
it up. A number a spreadsheet wrote as a decimal stays as written (its dot is no separator)."""

from __future__ import annotations

from common.campaigns.request import _given_number
from common.storage.campaign_programs import ERASED_ERROR
from tests.conftest import AppFactory
from tests.integration.test_erasure import AUTH, SCALE, TOKEN, kept_in_files, upload

ANN = "+14155557700"
NOWHERE = "+999 555 0100 22"


async def test_a_row_of_no_countrys_number_is_found_by_its_erasure(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    csv = f"phone_number,language\n{ANN},en\n{NOWHERE},Bob Ray\n"
    created = await upload(client, csv, invalid_rows="skip")
    assert created["invalid_row_count"] == 1
    assert b"Bob Ray" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": NOWHERE}, headers=AUTH)

    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["recipients_erased"] == 1
    url = f"/campaigns/{created['campaign_id']}/recipients?status=invalid"
    (row,) = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert row["phone_number"] == "+999555010022"
    assert {"field": "language", "error": ERASED_ERROR} in row["errors"]
    assert b"Bob Ray" not in kept_in_files(client)


def test_what_is_no_number_stays_as_written() -> None:
    assert _given_number("+4930123456.0") == "+4930123456.0"
    assert _given_number("+1 415") == "+1 415"
    assert _given_number("+1 415 555 0132") == "+14155550132"
    assert _given_number("Bob Ray") == ""
