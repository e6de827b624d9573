"""`POST /calls/erase` and `POST /dnc` take one JSON object; any other JSON value is said to
be the wrong body, as `POST /calls/outbound` says it: a bare list of numbers to `/dnc` was
told "numbers: must be a list", and `[]` to `/calls/erase` "phone_number: must be a string"."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient


@pytest.mark.parametrize(
    ("path", "body", "example"),
    [
        ("/calls/erase", ["+14155550100"], '{"phone_number": ...}'),
        ("/calls/erase", "+14155550100", '{"phone_number": ...}'),
        ("/dnc", ["+14155550100"], '{"numbers": [...]}'),
        ("/dnc", 1, '{"numbers": [...]}'),
    ],
)
async def test_a_body_that_is_not_an_object_is_said_to_be_one(
    client: TestClient[Any, Any], path: str, body: object, example: str
) -> None:
    resp = await client.post(path, json=body)
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["details"] == [{"field": "body", "error": f"must be a JSON object: {example}"}]
    listed = await client.get("/dnc")
    assert (await listed.json())["numbers"] == []


async def test_objects_are_read_as_before(client: TestClient[Any, Any]) -> None:
    """A guard (passes before the change too)."""
    erased = await client.post("/calls/erase", json={"phone_number": "+14155550100"})
    assert erased.status == 200 and (await erased.json())["erased"] == 0
    added = await client.post("/dnc", json={"numbers": ["+14155550100"]})
    assert added.status == 200 and (await added.json())["numbers"] == ["+14155550100"]
    unknown = await client.post("/dnc", json={"numbers": ["+14155550100"], "x": 1})
    assert unknown.status == 422
