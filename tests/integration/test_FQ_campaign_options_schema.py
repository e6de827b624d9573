"""/openapi.json's POST /campaigns body types its options as the server reads them. It
documented `pacing`, `window` and `retry` as free objects (`additionalProperties: true`, no
property typed) and `invalid_rows` as any string, so a client generated from it typed them as
any dict and any string, and the server refused (422) what the document allowed: seen on the
real server.py, `{"pacing": {"foo": 1}}`, `{"retry": {"foo": 1}}`, `{"window": {"foo": 1}}`,
`{"invalid_rows": "bogus"}`, each 422 "unknown field" / 'must be "reject" or "skip"'."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import jsonschema_rs
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory

Client = TestClient[Any, Any]
START_AT = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
ROWS = [{"phone_number": "+14155557705"}]

REFUSED: list[dict[str, Any]] = [
    {"pacing": {"foo": 1}},
    {"pacing": {"calls_per_second": 0}},
    {"pacing": {"max_concurrent": 1001}},
    {"pacing": {"calls_per_second": "2"}},
    {"retry": {"foo": 1}},
    {"retry": {"on": ["completed"]}},
    {"retry": {"on": None}},
    {"retry": {"max_attempts": 11}},
    {"retry": {"delay_s": 10}},
    {"window": {"foo": 1}},
    {"window": {"start": "25:00"}},
    {"window": {"start": "24:00"}},
    {"window": {"days": []}},
    {"window": {"days": ["someday"]}},
    {"invalid_rows": "bogus"},
    {"invalid_rows": None},
]
ACCEPTED: list[dict[str, Any]] = [
    {},
    {"pacing": None, "window": None, "retry": None},
    {
        "pacing": {"calls_per_second": 0.5, "max_concurrent": 3},
        "window": {"start": "08:30", "end": "24:00", "days": ["mon", "fri"], "timezone": "UTC"},
        "retry": {"on": ["busy", "failed"], "max_attempts": 2, "delay_s": 60},
        "invalid_rows": "skip",
    },
    {
        "pacing": {"calls_per_second": None, "max_concurrent": None},
        "window": {"start": None, "end": None, "days": None, "timezone": None},
        "retry": {"on": [], "max_attempts": None, "delay_s": None},
    },
]


def _body_validator(spec: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    schemas = json.loads(
        json.dumps(spec["components"]["schemas"]).replace("/components/schemas/", "/$defs/")
    )
    body = spec["paths"]["/campaigns"]["post"]["requestBody"]["content"]["application/json"]
    schema = json.loads(json.dumps(body["schema"]).replace("/components/schemas/", "/$defs/"))
    return jsonschema_rs.Draft202012Validator({**schema, "$defs": schemas})


async def _post(client: Client, options: dict[str, Any]) -> int:
    body = {"name": "schema", "recipients": ROWS, "start_at": START_AT, **options}
    resp = await client.post("/campaigns", json=body)
    return resp.status


async def test_options_the_server_refuses_the_document_refuses(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    valid = _body_validator(spec)
    for options in REFUSED:
        body = {"name": "schema", "recipients": ROWS, "start_at": START_AT, **options}
        assert await _post(client, options) == 422, options
        assert not valid.is_valid(body), options


async def test_options_the_server_takes_the_document_takes(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    valid = _body_validator(spec)
    for options in ACCEPTED:
        body = {"name": "schema", "recipients": ROWS, "start_at": START_AT, **options}
        assert valid.is_valid(body), options
        assert await _post(client, options) == 201, options
