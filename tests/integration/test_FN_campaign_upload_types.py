"""POST /campaigns with query options and a body that is no CSV: a tab-separated list
(text/tab-separated-values), a CSV sent as text/plain, curl's --data-binary default
(application/x-www-form-urlencoded) or no Content-Type at all were each answered "query
options are for CSV uploads (Content-Type: text/csv); a JSON body holds its own", about a
JSON body nobody sent. The error now names the body's type and what to send instead, and
a TSV read as JSON (no options) says a TSV is not read. Real app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

CSV = b"phone_number,name\n+14155550131,Ann\n"
TSV = b"phone_number\tname\n+14155550131\tAnn\n"
WHY = "query options are for CSV uploads (Content-Type: text/csv) and multipart ones"
TSV_SAID = (
    "a tab-separated list (text/tab-separated-values) is not read: save it as CSV"
    " (comma-separated) and send it as text/csv"
)


async def refused(
    client: TestClient[Any, Any], data: bytes, headers: dict[str, str], status: int = 422
) -> dict[str, Any]:
    resp = await client.post("/campaigns?name=List&invalid_rows=skip", data=data, headers=headers)
    answer: dict[str, Any] = await resp.json()
    assert resp.status == status, answer
    assert (await (await client.get("/campaigns")).json())["campaigns"] == []
    return answer


@pytest.mark.parametrize(
    ("content_type", "said"),
    [
        ("text/plain", "send a CSV as text/csv, not text/plain"),
        (
            "application/x-www-form-urlencoded",
            "send a CSV as text/csv, not application/x-www-form-urlencoded",
        ),
    ],
)
async def test_options_with_a_body_of_another_type_name_its_type(
    client: TestClient[Any, Any], content_type: str, said: str
) -> None:
    answer = await refused(client, CSV, {"Content-Type": content_type})
    message = f"{WHY}; {said}, or a JSON body (application/json) holding them"
    assert answer["details"] == [
        {"field": "name", "error": message},
        {"field": "invalid_rows", "error": message},
    ]


async def test_options_with_a_tsv_say_a_tsv_is_not_read(client: TestClient[Any, Any]) -> None:
    answer = await refused(client, TSV, {"Content-Type": "text/tab-separated-values"})
    assert answer["details"][0] == {"field": "name", "error": f"{WHY}; {TSV_SAID}"}
    resp = await client.post(
        "/campaigns", data=TSV, headers={"Content-Type": "text/tab-separated-values"}
    )
    answer = await resp.json()
    assert resp.status == 400, answer
    assert answer["error"].endswith(f"(read as JSON: {TSV_SAID})")


async def test_options_with_a_body_of_no_type_say_it_has_none(
    client: TestClient[Any, Any],
) -> None:
    # aiohttp's client sends bytes as application/octet-stream unless told no type at all.
    resp = await client.post("/campaigns?name=List", data=CSV, skip_auto_headers=["Content-Type"])
    answer = await resp.json()
    assert resp.status == 422, answer
    assert answer["details"] == [
        {
            "field": "name",
            "error": f"{WHY}; send a CSV as text/csv (this body came without a Content-Type),"
            " or a JSON body (application/json) holding them",
        }
    ]


async def test_options_with_a_json_body_are_still_told_it_holds_its_own(
    client: TestClient[Any, Any],
) -> None:
    answer = await refused(client, b"{}", {"Content-Type": "application/json"})
    assert answer["details"][0] == {"field": "name", "error": f"{WHY}; a JSON body holds its own"}
