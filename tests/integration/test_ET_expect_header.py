"""An `Expect` other than `100-continue` is refused as every other error is: a JSON 417,
counted in http_requests_total, before the route does anything (its token check included).
aiohttp's default expect handler answered it itself, before any middleware: a text/plain
"Unknown Expect: foo", counted nowhere. `100-continue` is answered `100 Continue` only when the
route reads the body: aiohttp's default sent it before the token and size checks, and a
client refused by them sent its body first (curl 524 KB of a 50 MB file before its 401)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from server import SANDBOX
from tests.conftest import AppFactory

CALL = {"phone_number": "+14155550123", "name": "Ann"}
TOKEN = "t" * 32


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


async def _first_answer(
    client: Any, length: int, *headers: str
) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    """`POST /calls/outbound` with `Expect: 100-continue` and a Content-Length of `length`,
    its body not sent: the first answer's head (a `100 Continue` or the final one)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [
        "POST /calls/outbound HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        "Expect: 100-continue",
        *headers,
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    return head, reader, writer


@pytest.mark.parametrize("authorization", [None, "Bearer wrong"])
async def test_no_100_continue_without_the_token(
    start_app: AppFactory, authorization: str | None
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    given = [f"Authorization: {authorization}"] if authorization else []
    head, _, writer = await _first_answer(client, 50_000_000, *given)
    writer.close()
    assert head.startswith(b"HTTP/1.1 401 "), head
    assert b"application/json" in head


async def test_no_100_continue_to_a_body_over_the_limit(start_app: AppFactory) -> None:
    client = await start_app(calls_api_token=TOKEN)
    head, _, writer = await _first_answer(client, 50_000_000, f"Authorization: Bearer {TOKEN}")
    writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head


async def test_100_continue_then_the_answer_when_the_body_is_read(
    start_app: AppFactory,
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    body = json.dumps(CALL).encode()
    head, reader, writer = await _first_answer(client, len(body), f"Authorization: Bearer {TOKEN}")
    try:
        assert head == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert len(client.app[SANDBOX].dials) == 1
