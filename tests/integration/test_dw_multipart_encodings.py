"""A multipart campaign upload whose part is encoded (Content-Transfer-Encoding base64 or
quoted-printable, a Content-Encoding) is refused 415 naming the part: parts are read as their
bytes, and a quoted-printable list was created as its encoded text (callees greeted as
"Jos=C3=A9"), a base64 one told it had no phone_number column, a gzip one that it held a NUL."""

from __future__ import annotations

import base64
import gzip
import quopri
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

CSV = "phone_number,name\r\n+14155550131,José García\r\n".encode()
HEADERS = {"Content-Type": "multipart/form-data; boundary=b"}


def _upload(part_headers: bytes, data: bytes, options_headers: bytes = b"") -> bytes:
    return (
        b'--b\r\nContent-Disposition: form-data; name="options"\r\n'
        + options_headers
        + b'\r\n{"name": "encoded parts"}\r\n'
        + b'--b\r\nContent-Disposition: form-data; name="recipients"; filename="list.csv"\r\n'
        + b"Content-Type: text/csv\r\n"
        + part_headers
        + b"\r\n"
        + data
        + b"\r\n--b--\r\n"
    )


async def _campaigns(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    resp = await client.get("/campaigns")
    assert resp.status == 200
    found: list[dict[str, Any]] = (await resp.json())["campaigns"]
    return found


@pytest.mark.parametrize(
    ("part_headers", "data", "said"),
    [
        pytest.param(
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            quopri.encodestring(CSV),
            "Content-Transfer-Encoding 'quoted-printable'",
            id="quoted-printable",
        ),
        pytest.param(
            b"Content-Transfer-Encoding: BASE64\r\n",
            base64.b64encode(CSV),
            "Content-Transfer-Encoding 'BASE64'",
            id="base64",
        ),
        pytest.param(
            b"Content-Encoding: gzip\r\n", gzip.compress(CSV), "Content-Encoding 'gzip'", id="gzip"
        ),
    ],
)
async def test_an_encoded_recipients_part_is_a_415_and_creates_nothing(
    client: TestClient[Any, Any], part_headers: bytes, data: bytes, said: str
) -> None:
    resp = await client.post("/campaigns", data=_upload(part_headers, data), headers=HEADERS)
    body = await resp.json()
    assert resp.status == 415, body
    assert body["status"] == "error"
    assert body["error"].startswith(f"the recipients part's {said} is not supported: "), body
    assert await _campaigns(client) == []


async def test_an_encoded_options_part_is_a_415(client: TestClient[Any, Any]) -> None:
    upload = _upload(
        b"",
        CSV,
        options_headers=b"Content-Transfer-Encoding: base64\r\n",
    ).replace(b'{"name": "encoded parts"}', base64.b64encode(b'{"name": "encoded parts"}'))
    resp = await client.post("/campaigns", data=upload, headers=HEADERS)
    body = await resp.json()
    assert resp.status == 415, body
    assert "the options part's Content-Transfer-Encoding 'base64'" in body["error"]
    assert await _campaigns(client) == []


@pytest.mark.parametrize(
    "part_headers",
    [
        b"",
        b"Content-Transfer-Encoding: binary\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n",
        b"Content-Encoding: identity\r\n",
    ],
)
async def test_parts_sent_as_their_bytes_are_read(
    client: TestClient[Any, Any], part_headers: bytes
) -> None:
    """A guard (passes before the fix too): identity encodings are no encodings."""
    resp = await client.post("/campaigns", data=_upload(part_headers, CSV), headers=HEADERS)
    assert resp.status == 201, await resp.text()
    assert [c["name"] for c in await _campaigns(client)] == ["encoded parts"]
