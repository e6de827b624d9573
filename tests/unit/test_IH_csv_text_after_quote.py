"""A CSV cell with text after its closing quote (`"Bob" Smith`, or `"Bob" ,` with a space
before its comma, as hand-edited lists have it) is refused saying so and what to write. It
was told the csv module's words, "malformed CSV: ',' expected after '\\"'", which named
neither the cell's fault nor the fix."""

from __future__ import annotations

import pytest

from common.campaigns.csv_rows import CsvRejected, RowError, parse_csv

TEXT_AFTER_QUOTE = (
    "malformed CSV: a quoted cell's closing quote is followed by more text before the next"
    " comma (a space counts); quote the whole cell, writing each quote that is part of its"
    ' text as two ("""Bob"" Smith")'
)


@pytest.mark.parametrize(
    "row", [b'+14155550124,"Bob" Smith\r\n', b'"+14155550124" ,Bob\r\n', b'+14155550124,"Bob" \r\n']
)
def test_text_after_a_closing_quote_is_told_so_in_its_row(row: bytes) -> None:
    with pytest.raises(CsvRejected) as refused:
        parse_csv(b"phone_number,name\r\n+14155550123,Ann\r\n" + row)
    assert refused.value.errors == [RowError(3, "file", TEXT_AFTER_QUOTE)]
