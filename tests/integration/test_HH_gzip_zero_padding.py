"""Zero bytes after a whole gzip member are padding, as Python's gzip module, GNU gzip and
zlib's gzread read them: a gzip call body a client or proxy padded to a block (512 bytes) was
refused 400 "request body could not be read", and its call not placed (aiohttp took the zeros
for the next member's header). A body cut short stays a 400 with or without zeros after it
(ebffd95), and so does one with anything but a whole member after its zeros."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
UNREADABLE = "request body could not be read (its Content-Encoding or framing is broken)"
CALL = json.dumps({"phone_number": "+34612340700", "name": "Ann"}).encode()
WHOLE = gzip.compress(CALL)
ROWS = (
    "phone_number,name\n" + "".join(f"+3461230{i:04d},Name {i}\n" for i in range(2000))
).encode()
OPTIONS = "name=List&invalid_rows=skip&start_at=2027-01-01T10:00:00Z"


def padded(body: bytes, block: int = 512) -> bytes:
    return body + b"\x00" * (block - len(body) % block)


async def placed(client: Client) -> int:
    return len((await (await client.get("/calls")).json())["calls"])


@pytest.mark.parametrize(
    "body",
    [padded(WHOLE), WHOLE + b"\x00", padded(gzip.compress(CALL[:9]) + gzip.compress(CALL[9:]))],
    ids=["to a 512-byte block", "one zero", "two members, padded"],
)
async def test_a_padded_gzip_call_is_placed(client: Client, body: bytes) -> None:
    resp = await client.post("/calls/outbound", data=body, headers={"Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
    assert await placed(client) == 1


CUT = {
    "trailer lost, then zeros": padded(WHOLE[:-4]),
    "half a member, then zeros": padded(WHOLE[: len(WHOLE) // 2]),
    "zeros, then a byte": WHOLE + b"\x00" * 10 + b"x",
    "zeros, then a cut member": WHOLE + b"\x00" * 10 + gzip.compress(b" ")[:-3],
    "zeros alone": b"\x00" * 512,
    "zeros, then a member": b"\x00" * 10 + WHOLE,
}


@pytest.mark.parametrize("case", list(CUT))
async def test_what_is_not_a_padded_whole_member_is_still_refused(
    client: Client, case: str
) -> None:
    resp = await client.post(
        "/calls/outbound", data=CUT[case], headers={"Content-Encoding": "gzip"}
    )
    assert (resp.status, (await resp.json())["error"]) == (400, UNREADABLE)
    assert await placed(client) == 0


async def test_a_padded_list_in_pieces_across_its_members_end_makes_its_campaign(
    client: Client,
) -> None:
    """Sent in chunks whose boundaries fall at the member's end, inside its trailer and in the
    padding: every way the zeros reach the decoder."""
    member = gzip.compress(ROWS)
    body = padded(member, 4096)
    cuts = [0, len(member) - 5, len(member), len(member) + 3, len(body)]
    head = (
        f"POST /campaigns?{OPTIONS} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\n"
        "Content-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        for start, end in zip(cuts, cuts[1:], strict=False):
            writer.write(f"{end - start:x}\r\n".encode() + body[start:end] + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"201", answer
    doc = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert doc["campaign"]["total"] == 2000
