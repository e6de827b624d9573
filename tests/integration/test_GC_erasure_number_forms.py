"""A campaign row skipped (invalid_rows=skip) whose number was written without its "+" but
with separators ("1 415 555 0123", as a spreadsheet or CRM exports it), with an international
call prefix ("001 415 555 0123", "0014155550123") or in its national form ("(415) 555-0123")
was kept as written, and its errors quote what else the row had wrong (a language 'Zelda
Quixote', a name from a column shifted). POST /calls/erase of +14155550123 found none of them
(recipients_erased 0, seen with curl on server.py) and the name stayed in calls.db for good,
also in the campaign's replayed Idempotency-Key answer. Such a row keeps the number's digits
alone, and the erasure looks up those forms of the number."""

from __future__ import annotations

from common.calls.phone import erased_forms
from common.campaigns.request import _given_number
from common.storage.campaign_programs import ERASED_ERROR
from tests.conftest import AppFactory
from tests.integration.test_erasure import AUTH, SCALE, TOKEN, kept_in_files, upload

ANN = "+14155557700"
ZELDA = "+14155550123"
FORMS = ("1 415 555 0123", "001 415 555 0123", "0014155550123", "(415) 555-0123", "1-415-555-0123")
OTHER = "1 415 555 0199"  # another person's number, also without its "+"


async def test_rows_of_a_number_written_in_other_forms_are_found_by_its_erasure(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE, calls_api_token=TOKEN)
    rows = "".join(f"{form},Zelda Quixote {n}\n" for n, form in enumerate(FORMS))
    csv = f"phone_number,language\n{ANN},en\n{rows}{OTHER},Other Person\n"
    created = await upload(client, csv, invalid_rows="skip")
    assert created["invalid_row_count"] == len(FORMS) + 1
    assert b"Zelda Quixote" in kept_in_files(client)

    resp = await client.post("/calls/erase", json={"phone_number": ZELDA}, headers=AUTH)

    answer = await resp.json()
    assert resp.status == 200, answer
    assert answer["recipients_erased"] == len(FORMS)
    assert b"Zelda Quixote" not in kept_in_files(client)
    assert b"Other Person" in kept_in_files(client)  # another number's row stays
    url = f"/campaigns/{created['campaign_id']}/recipients?status=invalid"
    recipients = (await (await client.get(url, headers=AUTH)).json())["recipients"]
    kept = {r["phone_number"]: r["errors"] for r in recipients}
    assert set(kept) == {"14155550123", "0014155550123", "4155550123", "14155550199"}
    assert all(e["error"] == ERASED_ERROR for e in kept["14155550123"])
    assert any("Other Person" in e["error"] for e in kept["14155550199"])


def test_a_rows_number_without_its_plus_is_kept_as_its_digits() -> None:
    assert _given_number("1 415 555 0123") == "14155550123"
    assert _given_number("001 (415) 555-0123") == "0014155550123"
    assert _given_number(" 030 123456 ") == "030123456"
    assert _given_number("14155550123.0") == "14155550123.0"  # a decimal: its dot is no separator
    assert _given_number("+1 415") == "+1 415"


def test_the_forms_of_a_number_an_erasure_looks_up() -> None:
    assert erased_forms("+442079460958") == (
        "+442079460958",
        "442079460958",
        "00442079460958",
        "011442079460958",
        "2079460958",
        "02079460958",
    )
    # A number of no country has no national form.
    assert erased_forms("+999555010022") == (
        "+999555010022",
        "999555010022",
        "00999555010022",
        "011999555010022",
    )
