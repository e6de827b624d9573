"""A recipient list whose header names its columns in quotes and in another separator's
columns (`"phone_number";"name"`, what Excel in many locales and most CRM exports write) was
refused "row 1: file: malformed CSV: ',' expected after '"'", saying nothing of the separator
(its unquoted form was told "columns are separated by commas, not ';'"). Now it is told so."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.campaigns.csv_rows import CsvRejected, RowError, parse_csv
from tests.unit.test_IH_csv_text_after_quote import TEXT_AFTER_QUOTE

CSV_HEADERS = {"Content-Type": "text/csv"}


@pytest.mark.parametrize(
    ("data", "sep"),
    [
        pytest.param(
            b'\xef\xbb\xbf"phone_number";"name";"notes"\r\n"+14155550131";"Ann";"x"\r\n',
            ";",
            id="semicolons",
        ),
        pytest.param(b'"phone_number"\t"name"\r\n"+14155550131"\t"Ann"\r\n', "\t", id="tabs"),
        pytest.param(b'"phone_number"|"name"\r\n+14155550131|Ann\r\n', "|", id="pipes"),
    ],
)
async def test_a_quoted_header_of_another_separator_is_told_the_separator(
    client: TestClient[Any, Any], data: bytes, sep: str
) -> None:
    resp = await client.post("/campaigns?name=semi", data=data, headers=CSV_HEADERS)
    body = await resp.json()
    assert resp.status == 422, body
    assert body["details"] == [
        {
            "field": "row 1: header",
            "error": f"columns are separated by commas, not {sep!r} as in this file: save it"
            " as CSV UTF-8 (comma-separated)",
        }
    ]


@pytest.mark.parametrize(
    "data",
    [
        b'"phone"x,name\r\n+14155550131,Ann\r\n',  # malformed, in no separator's columns
        b'"phone_number" "name"\r\n',  # one cell read by any separator
    ],
)
def test_a_header_malformed_otherwise_keeps_its_error(data: bytes) -> None:
    with pytest.raises(CsvRejected) as refused:
        parse_csv(data)
    assert refused.value.errors == [RowError(1, "file", TEXT_AFTER_QUOTE)]


def test_a_comma_separated_quoted_header_is_read_as_before() -> None:
    parsed = parse_csv(b'"phone_number","name"\r\n"+14155550131","Lee; Ann"\r\n')
    assert parsed.errors == []
    assert [r.fields for r in parsed.rows] == [{"phone_number": "+14155550131", "name": "Lee; Ann"}]
