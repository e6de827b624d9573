"""A connection LiveKit closed without answering is told apart: on a connection of its own to
a ws:// or http:// URL it may be a port serving TLS (the advice to use wss://, as before);
on a connection kept alive from an earlier request, which that port had just answered
without TLS, the advice was wrong, and so it was for a URL already wss://."""

from __future__ import annotations

import asyncio

import pytest

from common.livekit.client import (
    DroppedUnanswered,
    LiveKitError,
    _translate,
    check_reachable,
    create_client,
    create_session,
)
from common.settings import Settings

KEPT_OPEN = "on a connection kept open since an earlier request"
TLS_ADVICE = "LIVEKIT_URL must start with wss://"


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    sizes = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    await reader.readexactly(int(sizes[0].split(b":")[1]) if sizes else 0)


async def _answers_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One answer on a kept-alive connection; the next request on it is read, then the
    connection closed unanswered (a keep-alive timeout as the request came)."""
    await _read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/protobuf\r\nContent-Length: 0\r\n\r\n"
    )
    await writer.drain()
    await _read_request(reader)
    writer.close()


async def test_a_kept_alive_connection_closed_unanswered_gives_no_tls_advice() -> None:
    server = await asyncio.start_server(_answers_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with create_session() as session:
            lkapi = create_client(Settings(), f"ws://127.0.0.1:{port}", session)
            await check_reachable(lkapi)  # answered: the connection is kept for the next
            with pytest.raises(LiveKitError) as caught:
                await check_reachable(lkapi)
    finally:
        server.close()
        await server.wait_closed()
    said = str(caught.value)
    assert "closed the connection without an answer" in said, said
    assert KEPT_OPEN in said, said
    assert "TLS" not in said, said
    assert caught.value.maybe_done  # it may have been carried out all the same


def test_a_tls_url_closed_unanswered_gives_no_advice_to_use_tls() -> None:
    said = str(_translate(DroppedUnanswered(plain=False, reused=False), "SIP dial"))
    assert said.endswith("SIP dial: LiveKit closed the connection without an answer"), said


def test_a_plain_url_closed_unanswered_on_a_new_connection_keeps_its_tls_advice() -> None:
    said = str(_translate(DroppedUnanswered(plain=True, reused=False), "SIP dial"))
    assert TLS_ADVICE in said and KEPT_OPEN not in said, said
