"""/openapi.json lists every type POST /campaigns reads as a CSV: the server takes
`application/csv` as it takes `text/csv` (201), but the document listed text/csv alone."""

from __future__ import annotations

from tests.conftest import AppFactory

CSV = b"phone_number,name\n+14155557705,Al\n"


async def test_every_csv_type_the_server_reads_is_documented(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    documented = spec["paths"]["/campaigns"]["post"]["requestBody"]["content"]
    for csv_type in ("text/csv", "application/csv"):
        resp = await client.post(
            "/campaigns", params={"name": "List"}, data=CSV, headers={"Content-Type": csv_type}
        )
        assert resp.status == 201, (csv_type, await resp.text())
        assert documented.get(csv_type, {}).get("schema", {}).get("type") == "string", csv_type
