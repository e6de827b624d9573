"""A gzip or deflate body whose compressed stream stops short of its end is refused 400 as
unreadable, at once, as README says of "a Content-Encoding that is not what it says, framing
cut short". aiohttp took a gzip body cut short as whole: a CSV of 2,000 recipients gzipped by
a client that never flushed its compressor, or cut in half, made a campaign of its first rows
with no error (20,000 rows: 16,495 and 9,972 on the real server). A deflate body cut short
reached no handler: its read waited, and got 408 "did not arrive within 30 s" after 30 s."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import zlib
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
ROWS = (
    "phone_number,name\n" + "".join(f"+3461230{i:04d},Name {i}\n" for i in range(2000))
).encode()
# Cut short in a body that comes in several reads (as a 20,000-row list does from a client
# that sends its head and body apart), deflate got the 408; in one read, the parser's own 400.
LONG_ROWS = (
    "phone_number,name\n" + "".join(f"+346123{i:05d},Name {i}\n" for i in range(20000))
).encode()
UNREADABLE = "request body could not be read (its Content-Encoding or framing is broken)"
OPTIONS = {"name": "List", "invalid_rows": "skip", "start_at": "2027-01-01T10:00:00Z"}


def unflushed_gzip(data: bytes) -> bytes:
    """What a client that forgot its compressor's flush() sends: all but its last block."""
    return zlib.compressobj(6, zlib.DEFLATED, 31).compress(data)


CUT = {
    "gzip never flushed": ("gzip", unflushed_gzip(ROWS)),
    "gzip cut in half": ("gzip", gzip.compress(ROWS)[: len(gzip.compress(ROWS)) // 2]),
    "gzip without its trailer": ("gzip", gzip.compress(ROWS)[:-8]),
    "second gzip member cut": ("gzip", gzip.compress(ROWS[:500]) + gzip.compress(ROWS[500:])[:-4]),
}


async def post_list(client: Client, encoding: str, body: bytes) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        "/campaigns",
        params=OPTIONS,
        data=body,
        headers={"Content-Type": "text/csv", "Content-Encoding": encoding},
    )
    return resp.status, await resp.json()


@pytest.mark.parametrize("case", list(CUT))
async def test_a_list_cut_short_is_refused_and_makes_no_campaign(
    client: Client, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    encoding, body = CUT[case]
    started = time.monotonic()
    status, answer = await post_list(client, encoding, body)
    assert (status, answer["error"]) == (400, UNREADABLE), answer
    assert time.monotonic() - started < 5  # not the 30 s of a body still to come
    listed = await (await client.get("/campaigns")).json()
    assert listed["campaigns"] == []
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud


@pytest.mark.parametrize(
    "body",
    [gzip.compress(ROWS), gzip.compress(ROWS[:500]) + gzip.compress(ROWS[500:])],
    ids=["one member", "two members"],
)
async def test_a_whole_gzip_list_is_still_read_whole(client: Client, body: bytes) -> None:
    status, answer = await post_list(client, "gzip", body)
    assert status == 201, answer
    assert answer["campaign"]["total"] == 2000


async def test_a_call_whose_gzip_lost_its_trailer_is_refused_and_not_placed(
    client: Client,
) -> None:
    whole = gzip.compress(json.dumps({"phone_number": "+34612340700"}).encode())
    resp = await client.post(
        "/calls/outbound", data=whole[:-4], headers={"Content-Encoding": "gzip"}
    )
    assert (resp.status, (await resp.json())["error"]) == (400, UNREADABLE)
    assert (await (await client.get("/calls")).json())["calls"] == []
    resp = await client.post("/calls/outbound", data=whole, headers={"Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()


async def test_a_deflate_list_cut_short_in_several_reads_is_a_400_at_once(client: Client) -> None:
    body = zlib.compress(LONG_ROWS)[:40_000]
    head = (
        "POST /campaigns?name=List&invalid_rows=skip&start_at=2027-01-01T10:00:00Z HTTP/1.1\r\n"
        "Host: localhost\r\nContent-Type: text/csv\r\nContent-Encoding: deflate\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        for part in (head, body[:20_000], body[20_000:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        async with asyncio.timeout(5):  # not the 30 s of a body still to come
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400", answer
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"] == UNREADABLE
    assert (await (await client.get("/campaigns")).json())["campaigns"] == []


async def test_a_tiny_deflate_body_cut_short_is_answered_and_its_connection_closed(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A body of one read ("abcd" as deflate, once aiohttp's parser's own refusal): the app's
    400, in JSON, and the connection closed as its `Connection: close` says (it stayed open
    for the next request, although the answer said it would close)."""
    body = b"abcd"
    head = (
        "POST /dnc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Encoding: deflate\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()  # to the connection's end
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"400", answer
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"] == UNREADABLE
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud
