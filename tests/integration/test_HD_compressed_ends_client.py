"""The check of a compressed request body's end (refuse_cut_compressed_bodies, ebffd95) wraps
aiohttp's decoder for the whole process, and is meant for the API's requests only: the
aiohttp client in the same process (LiveKit's answers, customer receivers', gzipped) reads a
response as aiohttp does, and a campaign list gzipped as many small members (a client that
compresses row by row) is read whole."""

from __future__ import annotations

import asyncio
import gzip
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

ROWS = [f"+346123{i:05d},Name {i}\n" for i in range(9000)]
# Fewer members than aiohttp decodes in one read (MAX_DECOMPRESS_MEMBERS, 1,024: past it, its
# own refusal), ten rows each, in several reads.
MEMBERS = [ROWS[i : i + 10] for i in range(0, len(ROWS), 10)]


@asynccontextmanager
async def raw_answer(body: bytes) -> AsyncIterator[str]:
    """A server answering every request with a gzip `body` as it is (cut or whole)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()


async def test_the_client_in_the_servers_process_reads_gzip_answers_as_aiohttp_does(
    client: TestClient[Any, Any],
) -> None:
    assert (await client.get("/healthz")).status == 200  # the app, and its wrapping, are up
    data = b'{"rooms": [' + b",".join(b'{"name": "room-%d"}' % i for i in range(2000)) + b"]}"
    whole = gzip.compress(data)
    unflushed = zlib.compressobj(6, zlib.DEFLATED, 31).compress(data)  # aiohttp takes it
    async with aiohttp.ClientSession() as http:
        async with raw_answer(whole) as url, http.get(url) as resp:
            assert await resp.read() == data
        async with raw_answer(unflushed) as url, http.get(url) as resp:
            got = await resp.read()  # no ContentEncodingError: the client is as it was
        assert data.startswith(got)


async def test_a_list_gzipped_as_many_small_members_is_read_whole(
    client: TestClient[Any, Any],
) -> None:
    body = gzip.compress(b"phone_number,name\n") + b"".join(
        gzip.compress("".join(rows).encode()) for rows in MEMBERS
    )
    started = time.monotonic()
    resp = await client.post(
        "/campaigns",
        params={"name": "Members", "start_at": "2027-01-01T10:00:00Z"},
        data=body,
        headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"},
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["campaign"]["total"] == len(ROWS)
    # 2.3 s alone, 25 s once beside a loaded suite: a bound against minutes (a decoder going
    # over its members again for each one), not against a slow machine.
    assert time.monotonic() - started < 90
