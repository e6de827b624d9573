"""A CSV list whose Content-Type names a codec Python has that is no charset of a file
(`charset=idna`, `punycode`, `undefined`) is a 415 like any charset the server does not know:
POST /campaigns answered 500 "internal error" with a traceback in the log, as a bare
UnicodeError came out of the decode (or out of the error message's own decode) unhandled."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
ROWS = "phone_number,name\n+14155550131,José\n"


@pytest.mark.parametrize("charset", ["idna", "IDNA", "punycode", "undefined"])
@pytest.mark.parametrize("text", [ROWS, "phone_number,name\n+14155550131,Jose\n"])
async def test_a_codec_that_is_no_charset_is_a_415(client: Client, charset: str, text: str) -> None:
    for encoded in (text.encode("cp1252"), text.encode()):
        resp = await client.post(
            "/campaigns?name=u",
            data=encoded,
            headers={"Content-Type": f"text/csv; charset={charset}"},
        )
        body = await resp.json()
        assert resp.status == 415, body
        assert f"charset '{charset}' is not known" in body["error"]


async def test_a_multipart_part_naming_one_is_a_415(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "u")
    form.add_field(
        "recipients", ROWS.encode("cp1252"), filename="r.csv", content_type="text/csv; charset=idna"
    )
    resp = await client.post("/campaigns", data=form)
    body = await resp.json()
    assert resp.status == 415, body
    assert "charset 'idna' is not known" in body["error"]
