"""A client that half-closes its side of the connection once its request is sent (`printf ...
| nc -N`, socat, a script's `shutdown(SHUT_WR)`: all it will send is sent, and it waits for
the answer) got none: aiohttp closed the connection on the end of its input, and went on
with the request. Seen with the real server.py: `POST /calls/outbound` so sent dialled the
number (the sandbox placed the call) and the client read an empty reply, which it can only
take for a failure and send again, dialling the number twice; `GET /healthz` so sent was
access-logged `200-aborted`. Such a request is answered now, and the connection closed
after it; a request whose body had not all come when the client closed is not answered, as
before (it never reaches a handler)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from aiohttp.test_utils import TestClient

from server import SANDBOX
from tests.conftest import AppFactory

CALL = json.dumps({"phone_number": "+14155550123", "name": "Ann"}).encode()


async def half_closed_answer(client: TestClient[Any, Any], raw: bytes) -> bytes:
    """`raw` sent on a connection of its own whose sending side is then shut: what the server
    answers, read until it closes the connection."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.shutdown(socket.SHUT_WR)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def post(path: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


async def test_a_call_sent_by_a_half_closing_client_gets_its_answer(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    answer = await half_closed_answer(client, post("/calls/outbound", CALL))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    placed = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert placed["status"] == "success"
    assert len(client.app[SANDBOX].dials) == 1
    listed = await (await client.get("/calls")).json()
    assert [c["call_id"] for c in listed["calls"]] == [placed["call_id"]]


async def test_a_probe_from_a_half_closing_client_is_answered_and_logged_as_answered(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    answer = await half_closed_answer(client, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    assert answer.endswith(b'{"status":"ok"}'), answer
    metrics = await (await client.get("/metrics")).text()
    assert 'http_requests_total{code="200",method="GET",route="/healthz"} 1.0' in metrics
    assert "200-aborted" not in metrics


async def test_no_request_before_the_half_close_is_done_unanswered(
    start_app: AppFactory,
) -> None:
    """Pipelined, then half-closed: the first is answered; the connection closes after it,
    or after the second's answer (by when the half-close came): never a call placed whose
    answer was not sent."""
    client = await start_app()
    second = json.dumps({"phone_number": "+14155550124"}).encode()
    raw = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" + post("/calls/outbound", second)
    answer = await half_closed_answer(client, raw)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
    await asyncio.sleep(0.2)
    assert len(client.app[SANDBOX].dials) == answer.count(b"HTTP/1.1 200 OK") - 1, answer


async def test_a_body_cut_short_by_the_half_close_is_not_handled(start_app: AppFactory) -> None:
    client = await start_app()
    answer = await half_closed_answer(client, post("/calls/outbound", CALL[:10], len(CALL)))
    assert b"200 OK" not in answer
    await asyncio.sleep(0.2)
    assert client.app[SANDBOX].dials == []
    listed = await (await client.get("/calls")).json()
    assert listed["calls"] == []


async def test_an_answer_to_a_client_gone_altogether_is_still_counted_aborted(
    start_app: AppFactory,
) -> None:
    """A client that closed its socket (not only its sending side) sends the same FIN: its
    answer is written, its connection resets, and the answer is counted `200-aborted`."""
    client = await start_app()
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    await writer.drain()
    writer.close()
    await writer.wait_closed()

    async def counted() -> str:
        return await (await client.get("/metrics")).text()

    async with asyncio.timeout(5):
        while 'route="/healthz"' not in (metrics := await counted()):
            await asyncio.sleep(0.05)
    assert 'http_requests_total{code="200-aborted",method="GET",route="/healthz"} 1.0' in metrics
