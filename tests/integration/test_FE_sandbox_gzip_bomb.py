"""The embedded sandbox's port shares the server's loop: a compressed body it leaves unread
must not be unpacked after the answer, as on the API's port (test_hostile_requests.py's
test_a_gzip_bomb_left_unread_is_not_unpacked_after_the_answer). A 1 MB gzip of zeros posted
to it (any path; no valid token needed) held every call, webhook and probe of the server for
about 3 s while aiohttp unpacked its 1 GB."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from typing import Any

import pytest
from aiohttp import compression_utils
from yarl import URL

from server import SANDBOX
from tests.conftest import AppFactory

PACKED = gzip.compress(b"\0" * (32 * 1024 * 1024))


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/", b"", b"405"),  # aiohttp's own 405: GET only
        ("/nothing", b"", b"404"),  # aiohttp's own 404
        ("/twirp/livekit.RoomService/ListRooms", b"Authorization: Bearer forged\r\n", b"401"),
        ("/twirp/livekit.RoomService/ListRooms", b"Origin: http://evil.example\r\n", b"403"),
    ],
)
async def test_a_gzip_bomb_left_unread_by_the_sandbox_is_not_unpacked(
    start_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    extra: bytes,
    status: bytes,
) -> None:
    unpacked = [0]
    decompress = compression_utils.ZLibDecompressor.decompress_sync

    def counted(self: Any, data: bytes, max_length: int = 0) -> bytes:
        out: bytes = decompress(self, data, max_length)
        unpacked[0] += len(out)
        return out

    monkeypatch.setattr(compression_utils.ZLibDecompressor, "decompress_sync", counted)
    client = await start_app()
    sandbox = URL(client.app[SANDBOX].url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: gzip\r\nContent-Length: {len(PACKED)}\r\n"
    ).encode() + extra
    closed = False
    reader, writer = await asyncio.open_connection(sandbox.host, sandbox.port)
    try:
        writer.write(head + b"\r\n" + PACKED)
        async with asyncio.timeout(5):
            answer = await reader.readuntil(b"\r\n\r\n")
        with contextlib.suppress(TimeoutError):  # (before, the connection stayed open)
            closed = await asyncio.wait_for(reader.read(), 3) is not None
    finally:
        writer.close()
    assert answer.split()[1] == status, answer
    assert unpacked[0] < 8 * 1024 * 1024, f"{unpacked[0]} bytes unpacked"
    assert closed
    assert (await client.get("/healthz")).status == 200
