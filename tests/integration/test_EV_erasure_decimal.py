"""POST /calls/erase of a number a spreadsheet wrote as a decimal ("+4930123456.0", its
Number format) erased the calls of another number, +49301234560 (its dot read as a
separator, the ".0" as a digit): another person's data gone for good, answered 200
`erased: 1`, and the calls to +4930123456 kept. It is refused as POST /calls/outbound
refuses it (422, saying why), nothing erased. A well-formed number of no country is still
taken as written."""

from __future__ import annotations

from tests.conftest import AppFactory
from tests.integration.test_erasure import AUTH, SCALE, TOKEN, settled

OTHER = "+49301234560"  # a Berlin number
DECIMAL = "+4930123456.0"  # +49 30 123456, as a spreadsheet read and wrote it


async def test_a_decimal_number_erases_nothing(start_app: AppFactory) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    call_id = await settled(client, {"phone_number": OTHER, "name": "Other Person"})

    resp = await client.post("/calls/erase", json={"phone_number": DECIMAL}, headers=AUTH)

    answer = await resp.json()
    assert resp.status == 422, answer
    (detail,) = answer["details"]
    assert detail["field"] == "phone_number"
    assert detail["error"].startswith("ends in '.0'")
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == "Other Person"
    assert call["personal_data_erased_at"] is None
    # A made-up number of no country is still erased as written.
    resp = await client.post(
        "/calls/erase", json={"phone_number": "+999 555 0100 22"}, headers=AUTH
    )
    assert resp.status == 200, await resp.text()


async def test_taking_a_decimal_number_off_the_list_says_why(start_app: AppFactory) -> None:
    """DELETE /dnc/{number} of one answered 404 "not on the do-not-call list" while the
    number meant, +4930123456, was on it."""
    client = await start_app(calls_api_token=TOKEN)
    resp = await client.post("/dnc", json={"numbers": ["+4930123456"]}, headers=AUTH)
    assert resp.status == 200
    resp = await client.delete("/dnc/%2B4930123456.0", headers=AUTH)
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["details"][0]["error"].startswith("ends in '.0'")


async def test_a_decimal_is_no_page_of_the_list(start_app: AppFactory) -> None:
    """GET /dnc?after= of one paged from +49301234560, another number, answered 200."""
    client = await start_app(calls_api_token=TOKEN)
    resp = await client.get("/dnc?after=%2B4930123456.0", headers=AUTH)
    assert resp.status == 400
    assert (await client.get("/dnc?after=%2B4930123456", headers=AUTH)).status == 200
