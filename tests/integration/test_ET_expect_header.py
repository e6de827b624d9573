"""An `Expect` other than `100-continue` is refused as every other error is: a JSON 417,
counted in http_requests_total, before the route does anything (its token check included).
aiohttp's default expect handler answered it itself, before any middleware: a text/plain
"Unknown Expect: foo", counted nowhere. `100-continue` is answered `100 Continue` as before."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server import SANDBOX
from tests.conftest import AppFactory

CALL = {"phone_number": "+14155550123", "name": "Ann"}


async def test_an_unknown_expectation_is_a_json_417_counted_and_nothing_done(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    resp = await client.post("/calls/outbound", json=CALL, headers={"Expect": "foo"})
    assert resp.status == 417
    assert resp.content_type == "application/json"
    assert await resp.json() == {
        "status": "error",
        "error": "Expect 'foo' cannot be met: only 100-continue is supported",
        "details": [],
    }
    assert client.app[SANDBOX].dials == []
    listed = await (await client.get("/calls")).json()
    assert listed["calls"] == []
    resp = await client.get("/healthz", headers={"Expect": "100-continue-please"})
    assert (resp.status, resp.content_type) == (417, "application/json")
    metrics = await (await client.get("/metrics")).text()
    assert 'http_requests_total{code="417",method="POST",route="/calls/outbound"} 1.0' in metrics
    assert 'http_requests_total{code="417",method="GET",route="/healthz"} 1.0' in metrics


async def test_100_continue_is_still_answered_and_the_call_placed(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    resp = await client.post(
        "/calls/outbound", data=json.dumps(CALL), expect100=True, headers=_json()
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "success"
    # Any case, as aiohttp's own handler takes it.
    resp = await client.post("/calls/outbound", json=CALL, headers={"Expect": "100-Continue"})
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("token", [None, "t" * 32])
async def test_the_417_comes_before_the_token_check(
    start_app: AppFactory, token: str | None
) -> None:
    client = await start_app(calls_api_token=token)
    resp = await client.get("/calls", headers={"Expect": "foo"})
    assert (resp.status, resp.content_type) == (417, "application/json")


def _json() -> dict[str, Any]:
    return {"Content-Type": "application/json"}
