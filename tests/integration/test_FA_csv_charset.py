"""A CSV list whose Content-Type declares its charset (`text/csv; charset=windows-1252`, what
a spreadsheet saved as "CSV" on Western Windows holds) is read in that charset: it was
refused 422 "is not UTF-8: byte 0xE9" although its client had said which it was. UTF-8 stays
the default, a UTF-8 BOM still says UTF-8, and a charset Python does not know is a 415."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import CAMPAIGNS

Client = TestClient[Any, Any]
ROWS = "phone_number,name,note\n+14155550131,José Müller,“€5” – ok\n"


async def names(client: Client, resp: Any) -> list[tuple[str, str]]:
    body = await resp.json()
    assert resp.status == 201, body
    store = client.app[CAMPAIGNS].store
    rows = await store.list_recipients(body["campaign_id"], state=None, limit=10, after=None)
    return [(r.fields["name"], r.fields["additional_params"]["note"]) for r in rows]


@pytest.mark.parametrize("charset", ["windows-1252", "iso-8859-1", "CP1252"])
async def test_a_list_in_its_declared_charset_is_read_in_it(client: Client, charset: str) -> None:
    resp = await client.post(
        "/campaigns?name=latin",
        data=ROWS.encode("cp1252"),
        headers={"Content-Type": f"text/csv; charset={charset}"},
    )
    assert await names(client, resp) == [("José Müller", "“€5” – ok")]


async def test_a_multipart_part_in_its_declared_charset_is_read_in_it(client: Client) -> None:
    form = aiohttp.FormData()
    form.add_field("name", "latin")
    form.add_field(
        "recipients",
        ROWS.encode("cp1252"),
        filename="r.csv",
        content_type="text/csv; charset=windows-1252",
    )
    assert await names(client, await client.post("/campaigns", data=form)) == [
        ("José Müller", "“€5” – ok")
    ]


async def test_utf8_stays_the_default_and_its_bom_says_utf8(client: Client) -> None:
    undeclared = await client.post(
        "/campaigns?name=u", data=ROWS.encode("cp1252"), headers={"Content-Type": "text/csv"}
    )
    assert undeclared.status == 422
    assert "is not UTF-8: byte 0xE9" in (await undeclared.json())["details"][0]["error"]
    bom = await client.post(
        "/campaigns?name=u",
        data=ROWS.encode("utf-8-sig"),
        headers={"Content-Type": "text/csv; charset=windows-1252"},
    )
    assert await names(client, bom) == [("José Müller", "“€5” – ok")]


async def test_an_unknown_charset_or_bytes_not_of_it_are_said(client: Client) -> None:
    for charset in ("klingon-8", "base64"):
        resp = await client.post(
            "/campaigns?name=u",
            data=ROWS.encode("cp1252"),
            headers={"Content-Type": f"text/csv; charset={charset}"},
        )
        body = await resp.json()
        assert resp.status == 415, body
        assert f"charset '{charset}' is not known" in body["error"]
    undefined = await client.post(  # 0x81: no character in Windows-1252
        "/campaigns?name=u",
        data=b"phone_number,name\n+14155550131,A\x81\n",
        headers={"Content-Type": "text/csv; charset=windows-1252"},
    )
    assert undefined.status == 422
    error = (await undefined.json())["details"][0]
    assert error == {
        "field": "row 2: file",
        "error": "is not cp1252, as its Content-Type says: byte 0x81 at byte offset 32;"
        " save it as CSV UTF-8",
    }
