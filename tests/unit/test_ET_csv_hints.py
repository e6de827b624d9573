"""Campaign uploads: a DOS end-of-file mark (0x1A) as a CSV's last byte is no row (it was a
row refused as a phone_number not E.164, or a name holding a control character), and a time
zone written with spaces for its `_` ("America/New York") is told its IANA spelling, as a
zone in the wrong case is."""

from __future__ import annotations

import pytest

from common.campaigns.csv_rows import parse_csv
from common.campaigns.windows import InvalidWindow, parse_window, row_zone_problem

HEADER = b"phone_number,name\r\n"


@pytest.mark.parametrize(
    "body",
    [
        HEADER + b"+14155550123,Ann\r\n+14155550124,Bob\r\n\x1a",  # after the last line
        HEADER + b"+14155550123,Ann\r\n+14155550124,Bob\x1a",  # after the last cell
        HEADER + b"+14155550123,Ann\n+14155550124,Bob\n\x1a",
    ],
    ids=["own-line", "last-cell", "lf"],
)
def test_a_dos_end_of_file_mark_is_no_row(body: bytes) -> None:
    parsed = parse_csv(body)
    assert parsed.errors == [] and parsed.refused == []
    assert [(r.number, r.fields) for r in parsed.rows] == [
        (2, {"phone_number": "+14155550123", "name": "Ann"}),
        (3, {"phone_number": "+14155550124", "name": "Bob"}),
    ]


def test_a_0x1a_elsewhere_is_left_as_it_came() -> None:
    """Only the file's last byte is a DOS end mark; one in a cell is the cell's (refused by
    the name's rules, as a control character)."""
    parsed = parse_csv(HEADER + b"+14155550123,A\x1bnn\x1a\r\n+14155550124,Bob\r\n")
    assert [r.fields["name"] for r in parsed.rows] == ["A\x1bnn\x1a", "Bob"]


def test_header_names_are_matched_trimmed_and_in_any_case() -> None:
    parsed = parse_csv(b"PHONE_NUMBER , Name \r\n+14155550123,Ann\r\n")
    assert parsed.rows[0].fields == {"phone_number": "+14155550123", "name": "Ann"}


@pytest.mark.parametrize(
    "header",
    [
        "phone_number,name\u200b",  # a zero-width space pasted after a name
        "\ufeffphone_number,name",  # a BOM written twice (one is the file's)
        "\u200bphone_number,\u2060Name",
    ],
    ids=["zero-width-space", "second-bom", "word-joiner"],
)
def test_invisible_characters_in_a_header_name_are_not_counted(header: str) -> None:
    """`name\u200b` went to additional_params (each call placed as "Guest"), and a second
    BOM refused the file for lacking phone_number, naming '\ufeffphone_number'."""
    parsed = parse_csv(("\ufeff" + header + "\r\n+14155550123,Ann\r\n").encode())
    assert parsed.errors == []
    assert [(r.fields, r.additional_params) for r in parsed.rows] == [
        ({"phone_number": "+14155550123", "name": "Ann"}, {})
    ]


def test_an_invisible_character_leaves_an_other_columns_name_as_shown() -> None:
    parsed = parse_csv(b"phone_number,slot\xe2\x81\xa0\r\n+14155550123,9:30\r\n")
    assert parsed.rows[0].additional_params == {"slot": "9:30"}


@pytest.mark.parametrize(
    ("given", "meant"),
    [
        ("America/New York", "America/New_York"),
        ("america / new york", "America/New_York"),
        (" America/Los  Angeles ", "America/Los_Angeles"),
        ("Europe/Isle of Man", "Europe/Isle_of_Man"),
        ("America/Argentina/Buenos Aires", "America/Argentina/Buenos_Aires"),
    ],
)
def test_a_zone_with_spaces_for_its_underscores_is_told_its_spelling(
    given: str, meant: str
) -> None:
    assert row_zone_problem(given) == (f"unknown time zone {given!r}; did you mean {meant!r}?")
    with pytest.raises(InvalidWindow) as caught:
        parse_window({"timezone": given})
    assert caught.value.errors == [
        ("timezone", f"unknown time zone {given!r}; did you mean {meant!r}?")
    ]


@pytest.mark.parametrize("given", ["Etc/GMT5", "America/NewYork", "Europe/Lisbonn", " " * 200])
def test_no_spelling_is_made_up(given: str) -> None:
    """`-` is no separator (Etc/GMT-5 is not Etc/GMT5's spelling: the sign is the zone's),
    and a typo or a run of spaces gets the general advice."""
    problem = row_zone_problem(given)
    assert problem is not None and "did you mean" not in problem, problem
