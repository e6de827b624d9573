"""/openapi.json's multipart POST /campaigns lists the parts the server reads and no other:
it listed `options` and `recipients` only, open to any other. The server also reads the CSV
as `file` and each option as a form field named as the query's parameter (README: what
`requests.post(url, files={"file": f}, data={"name": "List"})` sends), and refuses (422) a part
of any other name, which the document allowed."""

from __future__ import annotations

from typing import Any

import aiohttp
import jsonschema_rs

from tests.conftest import AppFactory

CSV = b"phone_number,name\n+14155557705,Al\n"


def _form(**fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", CSV, filename="list.csv", content_type="text/csv")
    for name, value in fields.items():
        form.add_field(name, value)
    return form


def _multipart_schema(spec: dict[str, Any]) -> jsonschema_rs.Draft202012Validator:
    content = spec["paths"]["/campaigns"]["post"]["requestBody"]["content"]
    return jsonschema_rs.Draft202012Validator(content["multipart/form-data"]["schema"])


async def test_the_parts_the_server_reads_are_the_documents(start_app: AppFactory) -> None:
    client = await start_app()
    valid = _multipart_schema(await (await client.get("/openapi.json")).json())
    taken = {"name": "List", "invalid_rows": "skip", "calls_per_second": "2"}
    resp = await client.post("/campaigns", data=_form(**taken))
    assert resp.status == 201, await resp.text()
    assert valid.is_valid({"file": "…", **taken})

    refused = {"name": "List", "second_list": "+14155557706"}
    resp = await client.post("/campaigns", data=_form(**refused))
    assert resp.status == 422, await resp.text()
    assert "unknown part" in (await resp.json())["details"][0]["error"]
    assert not valid.is_valid({"file": "…", **refused})
