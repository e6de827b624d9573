"""A campaign row whose number lost its "+" (a spreadsheet's "4930123457"), skipped, is kept
as written, and its errors say "did you mean +4930123457" and quote what else the row had
wrong (a language 'Bob Ray', a name from a column shifted). POST /calls/erase of
+4930123457 found no recipient (recipients_erased 0) and both stayed for good. The erasure
looks the number up without its "+" too."""

from __future__ import annotations

from common.calls.phone import erased_forms
from common.storage.campaign_programs import ERASED_ERROR
from tests.conftest import AppFactory
from tests.integration.test_erasure import AUTH, SCALE, TOKEN, kept_in_files, upload

ANN = "+14155557700"
BEA = "+4930123457"


async def test_a_row_that_lost_its_plus_is_found_by_the_erasure_of_its_number(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    csv = f"phone_number,language\n{ANN},en\n{BEA[1:]},Bob Ray\n"
    created = await upload(client, csv, invalid_rows="skip")
    assert created["invalid_row_count"] == 1
    assert b"Bob Ray" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": BEA}, headers=AUTH)

    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["recipients_erased"] == 1
    url = f"/campaigns/{created['campaign_id']}/recipients?status=invalid"
    (row,) = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    assert row["phone_number"] == BEA[1:]
    assert row["errors"] == [
        {"field": "phone_number", "error": ERASED_ERROR},
        {"field": "language", "error": ERASED_ERROR},
    ]
    assert b"Bob Ray" not in kept_in_files(client)


def test_the_forms_an_erasure_looks_up() -> None:
    assert erased_forms(BEA)[:2] == (BEA, BEA[1:])
    assert erased_forms("+525512345678")[:4] == (
        "+525512345678",
        "+5215512345678",
        "525512345678",
        "5215512345678",
    )
