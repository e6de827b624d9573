"""A CSV header's invisible characters are taken out of its column names (5e3cdd8), but the
joiners are part of a name's spelling: Persian writes "نام‌خانوادگی" (last name) with a
ZWNJ, and 👩‍💻 is two emoji joined by a ZWJ. Taken out, the column's additional_params key
was misspelled, and no longer the key the campaign's defaults (JSON) give that value under:
both reached the agent, the row's value not over the default's."""

from __future__ import annotations

from common.campaigns.csv_rows import parse_csv
from common.campaigns.request import merged

LAST_NAME = "نام\u200cخانوادگی"  # with its ZWNJ, as Persian keyboards type it
TECHNOLOGIST = "\U0001f469\u200d\U0001f4bb"  # 👩‍💻


def test_a_joiner_inside_a_column_name_is_kept() -> None:
    data = f"phone_number,{LAST_NAME},{TECHNOLOGIST} role\n+14155550123,Rezaei,dev\n"

    (row,) = parse_csv(data.encode()).rows

    assert row.additional_params == {LAST_NAME: "Rezaei", f"{TECHNOLOGIST} role": "dev"}
    defaults = {"additional_params": {LAST_NAME: "(unknown)"}}
    body = merged(defaults, {"additional_params": row.additional_params})
    assert body["additional_params"][LAST_NAME] == "Rezaei"
    assert len(body["additional_params"]) == 2


def test_invisible_characters_at_a_names_ends_still_go() -> None:
    data = "phone_number,name\u200b\u200d,\u200dcity\ufeff\n+14155550123,Ann,Paris\n"

    (row,) = parse_csv(data.encode()).rows

    assert row.fields["name"] == "Ann"
    assert row.additional_params == {"city": "Paris"}
