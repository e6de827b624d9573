"""A load balancer set up to speak TLS to the server's plain-HTTP port (its backend or health
check protocol HTTPS), HTTP/2 (h2c: GCP's backend protocol HTTP/2), or to send the PROXY
protocol (HAProxy's send-proxy, an AWS NLB target group's proxy_protocol_v2), had every
request, its health checks too, answered 400 while the server's log stayed empty: aiohttp's
parser refuses them before any app sees them, and logs them at DEBUG only (a bad method on a
connection's first request: scanners' noise). Seen with the real server.py and raw sockets.
Each is now a WARNING, once a minute per kind, naming the peer and what to change."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.conftest import AppFactory

SENT = {
    "tls": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),
    "h2c": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    "proxy v1": b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 8000\r\nGET /healthz HTTP/1.1\r\n"
    b"Host: x\r\n\r\n",
    "proxy v2": b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xcb\x00\x71\x07\x7f\x00\x00\x01"
    b"\x9c\x40\x1f\x40GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
}
SAID = {
    "tls": "spoke TLS (https) to this plain-HTTP port, and its requests are refused (400)",
    "h2c": "spoke HTTP/2 (h2c) to this HTTP/1.1 port, and its requests are refused (400)",
    "proxy v1": "began with a PROXY protocol header (v1), and its requests are refused (400)",
    "proxy v2": "began as a PROXY protocol v2 header does, and its requests are refused (400)",
}


async def send(host: str, port: int | None, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", SENT.keys())
async def test_a_peer_speaking_another_protocol_is_said(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    client = await start_app()
    caplog.set_level(logging.INFO)
    for _ in range(3):  # a load balancer's health checks, one after another
        answer = await send(client.server.host, client.server.port, SENT[kind])
        assert answer.split()[1] == b"400", answer[:200]
    said = [r for r in caplog.records if r.name == "handlers.errors"]
    assert [r.levelname for r in said] == ["WARNING"], said  # once a minute
    line = said[0].getMessage()
    assert line.startswith(f"a connection from 127.0.0.1 {SAID[kind]}: "), line


async def test_other_malformed_requests_stay_quiet(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    caplog.set_level(logging.INFO)
    for junk in (b"HELLO / HTTP/1.1\r\n\r\n", b"\x00\x01\x02junk\r\n\r\n", b"GET / HTTP/9\r\n\r\n"):
        answer = await send(client.server.host, client.server.port, junk)
        assert answer.split()[1] == b"400", answer[:200]
    assert [r.getMessage() for r in caplog.records if r.name == "handlers.errors"] == []
