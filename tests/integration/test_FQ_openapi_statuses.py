"""/openapi.json names every status the routes answer: a client generated from it (or
schemathesis' status_code_conformance) met answers it did not describe. Seen on the real
server.py: `POST /calls/{call_id}/hangup` with `Content-Encoding: br` answered 415, and any
route with `Expect: foo` 417 (as README says), neither in the route's responses; the erasures'
409 "just ended" carries Retry-After, which their 409 did not list."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory

Client = TestClient[Any, Any]
# A value for each path parameter: any will do, the answers tested come before the lookup.
PATH_VALUES = {
    "call_id": "call-000000000000",
    "campaign_id": "cmp-000000000000",
    "delivery_id": "1",
    "number": "%2B14155550100",
}


def _url(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)


async def _spec(client: Client) -> dict[str, Any]:
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    spec: dict[str, Any] = await resp.json()
    return spec


async def test_an_unmet_expectation_is_documented_on_every_route(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await _spec(client)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            resp = await client.request(method.upper(), _url(path), headers={"Expect": "foo"})
            assert resp.status == 417, (method, path, resp.status)
            assert (await resp.json())["status"] == "error"
            assert "417" in operation["responses"], (method, path)


async def test_a_bodyless_writes_unreadable_body_is_documented(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await _spec(client)
    bodyless = [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method != "get" and "requestBody" not in operation and operation.get("security")
    ]
    # hang-up, erase one call, pause, resume, cancel, redeliver, DELETE /dnc/{number}
    assert len(bodyless) == 7, [(m, p) for m, p, _ in bodyless]
    for method, path, operation in bodyless:
        resp = await client.request(
            method.upper(), _url(path), data=b"{}", headers={"Content-Encoding": "br"}
        )
        assert resp.status == 415, (method, path, resp.status)
        assert "415" in operation["responses"], (method, path)
        for status in ("408", "501"):  # its body read as any route's: too slow, framing
            assert status in operation["responses"], (method, path, status)


async def test_the_erasures_409_lists_its_retry_after(start_app: AppFactory) -> None:
    """A campaign call that has just ended answers 409 with Retry-After: 1 (CallsJustEnded)."""
    client = await start_app()
    spec = await _spec(client)
    for path in ("/calls/erase", "/calls/{call_id}/erase"):
        conflict = spec["paths"][path]["post"]["responses"]["409"]
        assert "Retry-After" in conflict.get("headers", {}), path
