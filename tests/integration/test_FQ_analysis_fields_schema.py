"""/openapi.json's `analysis.fields` of POST /calls/outbound says what the server takes: a
field given as null is not given (the server drops it, as any null of the request), and a
field's name matches [a-z][a-z0-9_]{0,39}. Seen with schemathesis on the real server.py:
`{"analysis": {"fields": {"x": null}}}` was invalid by the document and placed a call (200),
and `{"analysis": {"fields": {"Bad Name": {"type": "string"}}}}` was valid by it and 422."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs

from tests.conftest import AppFactory

NUMBER = "+14155557705"
STRING_FIELD = {"type": "string", "description": "what they said"}


def _body_validator(spec: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    text = json.dumps(spec["components"]["schemas"]).replace("/components/schemas/", "/$defs/")
    return jsonschema_rs.Draft202012Validator(
        {"$ref": "#/$defs/OutboundCall", "$defs": json.loads(text)}
    )


async def test_the_fields_the_server_takes_are_the_documents(start_app: AppFactory) -> None:
    client = await start_app()
    valid = _body_validator(await (await client.get("/openapi.json")).json())
    cases: list[tuple[dict[str, Any], bool]] = [
        ({"x": None}, True),
        ({"reason": STRING_FIELD, "other": None}, True),
        ({"Bad Name": STRING_FIELD}, False),
        ({"1st": STRING_FIELD}, False),
        ({"a" * 41: STRING_FIELD}, False),
    ]
    for fields, taken in cases:
        body = {"phone_number": NUMBER, "analysis": {"fields": fields}}
        resp = await client.post("/calls/outbound", json=body)
        assert resp.status == (200 if taken else 422), (fields, await resp.text())
        assert valid.is_valid(body) == taken, fields
