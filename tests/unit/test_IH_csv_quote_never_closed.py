"""A CSV whose quote is never closed (`"Robert ""Bob"" Smith` without its closing quote, a
stray `"` opening a name) is refused naming the row and what to do. It was told the csv module's
words: "malformed CSV: unexpected end of data", or, in a list long enough that the rows after
the quote filled the cell past the module's 131,072 characters, "malformed CSV: field larger
than field limit (131072)": its user looked for a long cell in a row of short ones."""

from __future__ import annotations

import pytest

from common.campaigns.csv_rows import CsvRejected, RowError, parse_csv

HEADER = b"phone_number,name\r\n+14155550123,Ann\r\n"
NEVER_CLOSED = "malformed CSV: a quote opened in this row is never closed"
CLOSE_IT = 'close it, or write a quote that is part of a cell\'s text as two ("")'
SWALLOWED = ", and the lines after it were read into its cell"


def refused(data: bytes) -> list[RowError]:
    with pytest.raises(CsvRejected) as refusal:
        parse_csv(data)
    return refusal.value.errors


@pytest.mark.parametrize(
    ("rows_after", "told"),
    [
        (2, f"{NEVER_CLOSED}{SWALLOWED}; {CLOSE_IT}"),  # the module's "unexpected end of data"
        (8000, f"{NEVER_CLOSED}{SWALLOWED}; {CLOSE_IT}"),  # its "field larger than field limit"
    ],
)
def test_a_quote_never_closed_is_told_so_in_its_row(rows_after: int, told: str) -> None:
    after = b"".join(b"+1415555%04d,Someone Else\r\n" % i for i in range(rows_after))
    data = HEADER + b'+14155550124,"Robert ""Bob"" Smith\r\n' + after
    assert refused(data) == [RowError(3, "file", told)]


def test_a_quote_never_closed_in_the_last_row_is_told_so() -> None:
    assert refused(HEADER + b'+14155550124,"Bob') == [
        RowError(3, "file", f"{NEVER_CLOSED}; {CLOSE_IT}")
    ]


def test_a_cell_of_one_line_past_the_limit_is_told_its_length() -> None:
    data = HEADER + b"+14155550124," + b"x" * 140_000 + b"\r\n"
    assert refused(data) == [
        RowError(3, "file", "malformed CSV: a cell in this row is longer than 131,072 characters")
    ]
