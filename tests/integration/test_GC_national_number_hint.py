"""A US number written as the US writes it, in its national form ("(201) 577-0604", no
country code), was refused with the hint for a number that lost its "+": "did you mean
+2015770604 (EG)? spreadsheets drop the '+': write it with its '+'". That is an Egyptian
number: followed, the hint placed a call to Egypt (POST /calls/outbound), or erased the data
of someone there and none of the callee's (POST /calls/erase answered 200, erased 0). About
one 10-digit US number in 13 reads as another country's valid number with a "+". Ten digits
that are a valid North American number are now said to be one in its national form (and,
if they also are, another country's number without its "+": both named). Real app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.calls.phone import parse_e164
from tests.integration.test_webhooks import CALL

E164 = "must be E.164: '+' then 8 to 15 digits, e.g. +14155550123"
BOTH = (
    "did you mean +12015770604 (US), written in its national form, or +2015770604 (EG) without"
    " its '+'? write it with its '+' and its country code"
)
NATIONAL = (
    "did you mean +14155550123 (US)? it is written in its national form: write it with its '+'"
    " and its country code"
)


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("(201) 577-0604", BOTH),
        ("2015770604", BOTH),
        ("(415) 555-0123", NATIONAL),
        ("415.555.0123", NATIONAL),
    ],
)
def test_a_north_american_number_in_national_form_is_told_so(given: str, said: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_e164(given)
    assert str(refused.value) == f"{E164}: {said}"


async def test_neither_a_call_nor_an_erasure_is_pointed_at_another_country(
    client: TestClient[Any, Any],
) -> None:
    placed = await client.post("/calls/outbound", json=dict(CALL, phone_number="(201) 577-0604"))
    erased = await client.post("/calls/erase", json={"phone_number": "(201) 577-0604"})
    for resp in (placed, erased):
        answer = await resp.json()
        assert resp.status == 422, answer
        assert answer["details"] == [{"field": "phone_number", "error": f"{E164}: {BOTH}"}]
