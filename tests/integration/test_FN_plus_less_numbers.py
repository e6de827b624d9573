"""A number that lost its "+" (a spreadsheet read the column as numbers: "+14155550123" comes
back 14155550123, or 14155550123.0 from pandas) got only "must be E.164: '+' then 8 to 15
digits" from POST /calls/outbound and from a campaign's CSV row, with no word of what was
wrong. It is told the number it would be with its "+" (and its country, when that is a valid
number; when it is none, that it is none), and still refused: a bare number's country is no
guess to dial on. Real app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.calls.phone import parse_e164
from tests.integration.test_webhooks import CALL

E164 = "must be E.164: '+' then 8 to 15 digits, e.g. +14155550123"
AS_TEXT = "spreadsheets drop the '+': write it with its '+', the column formatted as text"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("14155550123", f"did you mean +14155550123 (US)? {AS_TEXT}"),
        ("4930123456", f"did you mean +4930123456 (DE)? {AS_TEXT}"),
        (" 1 (415) 555-0123 ", f"did you mean +14155550123 (US)? {AS_TEXT}"),
        (
            "14155550123.0",
            "did you mean +14155550123 (US)? spreadsheets drop the '+': write it with its '+'"
            " and without its '.0', the column formatted as text",
        ),
        # +41 55 550 12 is no valid (Swiss) number: it is not offered as the number meant,
        # nor is a country named for it (what is said of 4155550123, a US number in its
        # national form: test_GC_national_number_hint).
        (
            "415555012",
            "+415555012 (it with a '+') is no valid number: write '+', its country code and"
            " the number",
        ),
        # A Spanish mobile in its national form: "did you mean +612345678?" offered an
        # Australian number that is none, which the server takes and dials.
        (
            "612 345 678",
            "+612345678 (it with a '+') is no valid number: write '+', its country code and"
            " the number",
        ),
    ],
)
def test_a_number_without_its_plus_is_told_the_number_with_one(given: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_e164(given)
    assert str(refused.value) == f"{E164}: {said}"


@pytest.mark.parametrize("given", ["0301234567", "12", "1415555O123", "+1415"])
def test_what_no_plus_would_make_a_number_gets_no_such_hint(given: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_e164(given)
    assert "did you mean" not in str(refused.value)


async def test_a_call_to_a_number_without_its_plus_is_refused_with_the_hint(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post("/calls/outbound", json=dict(CALL, phone_number="14155550123"))
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["details"] == [
        {"field": "phone_number", "error": f"{E164}: did you mean +14155550123 (US)? {AS_TEXT}"}
    ]
    assert (await (await client.get("/calls")).json())["calls"] == []


async def test_a_csv_row_without_its_plus_is_refused_with_the_hint(
    client: TestClient[Any, Any],
) -> None:
    data = b"phone_number,name\r\n+14155550131,Ann\r\n4930123456,Bea\r\n"
    resp = await client.post(
        "/campaigns?name=list&invalid_rows=skip",
        data=data,
        headers={"Content-Type": "text/csv"},
    )
    answer = await resp.json()
    assert resp.status == 201, answer
    assert answer["invalid_rows"] == [
        {
            "row": 3,
            "field": "phone_number",
            "error": f"{E164}: did you mean +4930123456 (DE)? {AS_TEXT}",
        }
    ]
    resp = await client.get(f"/campaigns/{answer['campaign_id']}/recipients")
    states = [(r["row"], r["state"]) for r in (await resp.json())["recipients"]]
    assert states[1] == (3, "invalid")
