"""/openapi.json's POST /calls/erase body gives `phone_number` the syntax the server reads
(as POST /calls/outbound's and POST /dnc's do): it was any string, so schemathesis' positive
data (`{"phone_number": ""}`, valid by the document) was answered 422 "must be E.164"."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.conftest import AppFactory

NOT_NUMBERS = ["", "14155550123", "+999", "0014155550123", "+1 415 555 0123 x"]
NUMBERS = ["+14155550123", "+1 (415) 555-0123", " +14155550123 ", "+34 612.345.678"]


def _syntax(spec: dict[str, Any]) -> str:
    body = spec["components"]["schemas"]["EraseNumberBody"]
    pattern: str = body["properties"]["phone_number"]["pattern"]
    return pattern


async def test_the_document_reads_the_number_as_the_server_does(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    syntax = re.compile(_syntax(spec))
    for number, matches in [(n, False) for n in NOT_NUMBERS] + [(n, True) for n in NUMBERS]:
        resp = await client.post("/calls/erase", data=json.dumps({"phone_number": number}))
        assert resp.status == (200 if matches else 422), (number, await resp.text())
        assert bool(syntax.search(number)) == matches, number
