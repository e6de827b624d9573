"""Uploaded recipient lists: encodings, line ends, quoting, headers, row numbers, limits."""

from __future__ import annotations

import codecs

import pytest

from common.campaigns.csv_rows import (
    CALL_FIELDS,
    MAX_COLUMNS,
    CsvRejected,
    CsvRow,
    RowError,
    parse_csv,
)
from common.campaigns.request import options_from_query

BOM = b"\xef\xbb\xbf"


def rejected(data: bytes, max_rows: int = 100_000) -> list[RowError]:
    with pytest.raises(CsvRejected) as caught:
        parse_csv(data, max_rows=max_rows)
    return caught.value.errors


def test_call_fields() -> None:
    assert {
        "phone_number",
        "name",
        "dynamic_instruction",
        "language",
        "emotion",
        "first_message",
        "webhook_url",
    } == CALL_FIELDS


def test_plain_file_with_row_numbers_as_a_spreadsheet_shows_them() -> None:
    result = parse_csv(b"phone_number,name\n+14155550123,Alice\n+14155550124,Bob\n")
    assert result.errors == []
    assert result.rows == [
        CsvRow(2, {"phone_number": "+14155550123", "name": "Alice"}, {}),
        CsvRow(3, {"phone_number": "+14155550124", "name": "Bob"}, {}),
    ]


def test_bom_and_crlf() -> None:
    result = parse_csv(BOM + b"phone_number,name\r\n+14155550123,Alice\r\n")
    assert result.rows == [CsvRow(2, {"phone_number": "+14155550123", "name": "Alice"}, {})]


def test_quoted_commas_newlines_and_doubled_quotes() -> None:
    data = (
        b"phone_number,name,dynamic_instruction\r\n"
        b'+14155550123,"Smith, Jane","Say ""hi"".\r\nThen ask, politely."\r\n'
        b"+14155550124,Bob,\r\n"
    )
    result = parse_csv(data)
    assert result.errors == []
    first, second = result.rows
    assert first.fields == {
        "phone_number": "+14155550123",
        "name": "Smith, Jane",
        "dynamic_instruction": 'Say "hi".\nThen ask, politely.',
    }
    # The quoted cell spanned two lines but is one spreadsheet row: Bob is row 3.
    assert second.number == 3
    assert second.fields["dynamic_instruction"] is None


def test_header_names_are_trimmed_and_case_insensitive() -> None:
    result = parse_csv(b" Phone_Number ,NAME , Language\n +14155550123 , Alice ,fr\n")
    assert result.rows[0].fields == {
        "phone_number": "+14155550123",
        "name": "Alice",
        "language": "fr",
    }


def test_other_columns_go_to_additional_params() -> None:
    data = b"phone_number,Customer Tier,campaign_id,first_message\n+14155550123,Gold,,Hello!\n"
    (row,) = parse_csv(data).rows
    assert row.fields == {"phone_number": "+14155550123", "first_message": "Hello!"}
    assert row.additional_params == {"Customer Tier": "Gold"}  # the empty cell is omitted


def test_call_fields_can_be_overridden() -> None:
    data = b"phone_number,name,tier\n+14155550123,Alice,gold\n"
    (row,) = parse_csv(data, call_fields={"Tier"}).rows
    assert row.fields == {"phone_number": "+14155550123", "tier": "gold"}
    assert row.additional_params == {"name": "Alice"}


def test_fewer_fields_are_missing_values() -> None:
    (row,) = parse_csv(b"phone_number,name,language,tier\n+14155550123,Alice\n").rows
    assert row.fields == {"phone_number": "+14155550123", "name": "Alice", "language": None}
    assert row.additional_params == {}


def test_blank_lines_are_skipped_but_keep_their_row_numbers() -> None:
    data = b"phone_number\n\n+14155550123\n ,  \n\n+14155550124\n"
    assert [row.number for row in parse_csv(data).rows] == [3, 6]


def test_too_many_fields_is_a_row_error() -> None:
    data = b"phone_number,name\n+14155550123,Smith, Jane\n+14155550124,Bob\n"
    result = parse_csv(data)
    assert [row.number for row in result.rows] == [3]
    assert result.errors == [
        RowError(
            2,
            "column 3",
            "has 3 fields but the header names 2 columns; quote cells that contain commas",
        )
    ]


def test_trailing_empty_cells_are_not_extra_fields() -> None:
    result = parse_csv(b"phone_number,name,\n+14155550123,Alice,,\n")
    assert result.errors == []
    assert result.rows[0].fields == {"phone_number": "+14155550123", "name": "Alice"}


def test_value_under_an_unnamed_column_is_a_row_error() -> None:
    result = parse_csv(b"phone_number,,name\n+14155550123,oops,Alice\n")
    assert result.rows == []
    assert result.errors == [RowError(2, "column 2", "has a value but no header")]


def test_values_under_several_unnamed_columns_are_one_row_error() -> None:
    """One per row, however many stray cells (a row of a million was a million errors)."""
    result = parse_csv(
        b"phone_number,,,,name\n+14155550123,x,,y,Alice\n" + b"1" + b",z" * 3 + b"\n"
    )
    assert result.errors == [
        RowError(2, "column 2", "has a value but no header (and 1 more columns)"),
        RowError(3, "column 2", "has a value but no header (and 2 more columns)"),
    ]


def test_a_header_of_too_many_named_columns_is_one_error() -> None:
    """A header repeating one name eight million times took 5.6 GB, an error per column."""
    assert rejected(b"phone_number" + b",a" * 100_000 + b"\n+14155550123\n") == [
        RowError(1, "header", f"names 100001 columns; at most {MAX_COLUMNS}")
    ]
    fits = b"phone_number" + b"".join(b",p%d" % n for n in range(MAX_COLUMNS - 1))
    result = parse_csv(fits + b"\n+14155550123" + b",v" * (MAX_COLUMNS - 1) + b"\n")
    assert result.errors == [] and len(result.rows[0].additional_params) == MAX_COLUMNS - 1


def test_a_wide_blank_header_over_short_rows_reads_each_row_once() -> None:
    """Rows shorter than the header are read by their own cells: every call field of the
    header is still there, blank (None)."""
    data = b"name,phone_number" + b"," * 200_000 + b"\n" + b"Al,+14155550123\n" * 2_000
    result = parse_csv(data)
    assert result.errors == [] and len(result.rows) == 2_000
    assert result.rows[0].fields == {"name": "Al", "phone_number": "+14155550123"}
    short = parse_csv(b"phone_number,name,language\n+14155550123\n")
    assert short.rows[0].fields == {"phone_number": "+14155550123", "name": None, "language": None}


def test_blank_phone_number_is_a_row_error() -> None:
    result = parse_csv(b"name,phone_number\nAlice,\nBob,+14155550124\n")
    assert result.errors == [RowError(2, "phone_number", "is empty")]
    assert [row.number for row in result.rows] == [3]


def test_missing_phone_number_header() -> None:
    """The refusal names what the header has, and the column to rename: "Phone Number" (a
    spreadsheet's) or "phone" got "the header must have this column" alone (probe BB)."""
    assert rejected(b"name,number\nAlice,+14155550123\n") == [
        RowError(
            1,
            "phone_number",
            "the header must have this column; it names 'name', 'number':"
            " rename 'number' to phone_number",
        )
    ]
    (error,) = rejected(b"Phone Number,Name\n+14155550123,Alice\n")
    assert error.error.endswith(
        "it names 'Phone Number', 'Name': rename 'Phone Number' to phone_number"
    )
    (error,) = rejected(b"who,when\nAlice,9:30\n")
    assert error.error == "the header must have this column; it names 'who', 'when'"
    many = ",".join(f"c{i}" for i in range(12)) + "," + "x" * 50
    (error,) = rejected(many.encode() + b"\n1\n")
    assert error.error.endswith("'c8', 'c9' and 3 more")
    # the name to rename is cut as the others are: "phone", 100,000 spaces, "number" was
    # quoted back whole (128 KiB a cell)
    (error,) = rejected(b"phone" + b" " * 100_000 + b"number\n1\n")
    assert error.error.endswith(f": rename 'phone{' ' * 35}…' to phone_number")


def test_duplicate_header_names() -> None:
    errors = rejected(b"phone_number,Name,name \n+14155550123,A,B\n")
    assert errors == [RowError(1, "name", "column 3 repeats column 2")]


def test_row_limit() -> None:
    data = b"phone_number\n" + b"".join(b"+1415555%04d\n" % i for i in range(5))
    assert len(parse_csv(data, max_rows=5).rows) == 5
    assert rejected(data + b"+14155559999\n", max_rows=5) == [
        RowError(7, "file", "more than 5 data rows")
    ]
    # Blank lines are not data rows.
    assert len(parse_csv(data + b"\n\n", max_rows=5).rows) == 5


def test_latin1_is_refused_with_the_byte_offset() -> None:
    data = "phone_number,name\n+14155550123,José\n".encode("latin-1")
    (error,) = rejected(data)
    assert error.row == 2
    assert "not UTF-8" in error.error
    assert "0xE9" in error.error
    assert f"byte offset {data.index(0xE9)}" in error.error


def test_bad_byte_inside_a_multiline_cell_is_numbered_by_its_row() -> None:
    data = b'phone_number,name\n+14155550123,"line one\nline two \xff"\n'
    (error,) = rejected(BOM + data)
    assert error.row == 2
    assert f"byte offset {len(BOM) + data.index(0xFF)}" in error.error


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_is_refused(encoding: str) -> None:
    (error,) = rejected("phone_number\n+14155550123\n".encode(encoding))
    assert error.field == "file"
    assert "UTF-16" in error.error
    assert "UTF-8" in error.error


@pytest.mark.parametrize("encoding", ["utf-32", "utf-32-be"])
def test_utf32_is_told_as_utf32(encoding: str) -> None:
    """A UTF-32 file (little-endian: its BOM starts as UTF-16's) was refused "is UTF-16 (it
    starts with a UTF-16 BOM)", and a big-endian one "contains a NUL byte"; its user looked
    for the wrong export setting."""
    body = "phone_number\n+14155550123\n".encode(encoding)
    if encoding == "utf-32-be":
        body = codecs.BOM_UTF32_BE + body
    (error,) = rejected(body)
    assert (error.row, error.field) == (1, "file")
    assert error.error == "is UTF-32 (it starts with a UTF-32 BOM); save it as CSV UTF-8"


def test_unterminated_quote_is_refused_rather_than_swallowing_the_file() -> None:
    (error,) = rejected(b'phone_number,name\n+14155550123,"Alice\n+14155550124,Bob\n')
    assert error.row == 2
    assert "malformed CSV" in error.error


@pytest.mark.parametrize("data", [b"", BOM, b"\n", b" , \n+14155550123\n"])
def test_empty_file_or_blank_header(data: bytes) -> None:
    (error,) = rejected(data)
    assert (error.row, error.field) == (1, "header")


def test_header_only() -> None:
    result = parse_csv(b"phone_number,name\r\n")
    assert result.rows == []
    assert result.errors == []


def test_rejection_message_names_row_and_field() -> None:
    with pytest.raises(ValueError, match="^row 1: phone_number: the header must have"):
        parse_csv(b"name\nAlice\n")
    assert RowError(17, "name", "x").to_json() == {"row": 17, "field": "name", "error": "x"}


def test_blank_rows_count_against_their_own_bound() -> None:
    """Skipped, but not without end: a body of blank lines alone was read to its end."""
    assert [
        row.number for row in parse_csv(b"phone_number\n\n\n\n+14155550123\n", max_rows=3).rows
    ] == [5]
    with pytest.raises(CsvRejected) as refused:
        parse_csv(b"phone_number\n" + b" , \n" * 4 + b"+14155550123\n", max_rows=3)
    assert refused.value.errors == [RowError(5, "file", "more than 3 blank rows")]


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("2026-12-05T09:00:00 09:00", "2026-12-05T09:00:00+09:00"),  # an unencoded "+"
        ("2026-12-05T09:00:00.5 0530", "2026-12-05T09:00:00.5+0530"),
        ("2026-12-05T09:00:00+09:00", "2026-12-05T09:00:00+09:00"),
        ("2026-12-05T09:00:00-05:00", "2026-12-05T09:00:00-05:00"),
        ("2026-12-05T09:00:00Z", "2026-12-05T09:00:00Z"),
        ("2026-12-05 09:00:00Z", "2026-12-05 09:00:00Z"),  # a space but no offset after it
    ],
)
def test_a_query_start_at_whose_plus_became_a_space_is_read_as_sent(given: str, read: str) -> None:
    assert options_from_query({"start_at": given})["start_at"] == read


def test_a_column_named_as_a_reserved_key_is_refused_once_by_its_header() -> None:
    """A column additional_params may not hold (a CRM export's last_updated or call_id) was
    refused in every row, each error naming additional_params, a column the file does not
    have: 100,000 rows, 100,000 times the same refusal. The header is refused, naming it."""
    errors = rejected(b"phone_number,call_id,slot,last_updated\n+14155550123,c1,9,x\n")
    assert [(e.row, e.field) for e in errors] == [(1, "call_id"), (1, "last_updated")]
    assert errors[0].error.startswith("column 2 would go to additional_params, which may not")
    assert errors[0].error.endswith("rename the column")
    # a call field's column, whatever its case, is the call field it names
    parsed = parse_csv(b"phone_number,First_Message,Caller_Name\n+14155550123,Hi,x\n")
    assert parsed.rows[0].fields["first_message"] == "Hi"
    assert parsed.rows[0].additional_params == {"Caller_Name": "x"}


def test_a_column_naming_a_call_field_a_row_cannot_set_is_refused() -> None:
    """A ringing_timeout_s or max_duration_s column went to additional_params, where no call
    reads it: every call rang (and lasted) the default time, with nothing said."""
    errors = rejected(b"phone_number,ringing_timeout_s,Max_Duration_S,voicemail\n+14155550123,9\n")
    assert [(e.row, e.field) for e in errors] == [
        (1, "ringing_timeout_s"),
        (1, "Max_Duration_S"),
        (1, "voicemail"),
    ]
    assert errors[0].error == (
        "column 2 names a call field a CSV row cannot set; set it for every row in the"
        " options' defaults"
    )
    (error,) = rejected(b"phone_number,additional_params\n+14155550123,x\n")
    assert error.error.startswith("column 2 would go to additional_params")


def test_a_column_spelled_as_a_call_field_in_words_is_told_to_be_renamed() -> None:
    """A "First Message" or "webhook url" column set no call field and went to
    additional_params unsaid: each call greeted with the default, its events went elsewhere."""
    errors = rejected(
        b"phone_number,First Message,webhook-url,Dynamic  Instruction,first_name,Phone Number\n"
        b"+14155550123,Hi,https://example.com/h,Be brief,Al,+14155550124\n"
    )
    assert [(e.row, e.field) for e in errors] == [
        (1, "First Message"),
        (1, "webhook-url"),
        (1, "Dynamic  Instruction"),
    ]
    assert errors[0].error == (
        "column 2 is not the call field first_message, which a column sets only so named:"
        " rename it first_message (or, to pass it to the agent in additional_params, to a"
        " name no call field has)"
    )
    # A header lacking phone_number is told once, to rename the one that looks like it.
    (error,) = rejected(b"Phone Number,name\n+14155550123,Al\n")
    assert error.field == "phone_number"


def test_a_column_spelled_as_a_call_field_or_an_option_run_together_is_refused() -> None:
    """A CRM export's "FirstMessage", "WebhookURL" or "StartAt" went to additional_params
    unsaid, as "First Message" did: each call greeted with the default first message, its
    events went to the default webhook, each row was called at the campaign's time."""
    errors = rejected(
        b"phone_number,FirstMessage,WebhookURL,DynamicInstruction,StartAt,FirstName\n"
        b"+14155550123,Hi,https://example.com/h,Be brief,x,Al\n"
    )
    assert [(e.field, e.error.split(",")[0]) for e in errors] == [
        ("FirstMessage", "column 2 is not the call field first_message"),
        ("WebhookURL", "column 3 is not the call field webhook_url"),
        ("DynamicInstruction", "column 4 is not the call field dynamic_instruction"),
        ("StartAt", "column 5 names the campaign option start_at"),
    ]


def test_a_column_naming_a_campaign_option_is_refused() -> None:
    """A start_at column went to additional_params: each row was called at the campaign's
    time, not its own, with nothing said."""
    errors = rejected(b"phone_number,start_at,Window Start,max_attempts\n+14155550123,x,y,z\n")
    assert [(e.row, e.field) for e in errors] == [
        (1, "start_at"),
        (1, "Window Start"),
        (1, "max_attempts"),
    ]
    assert errors[0].error == (
        "column 2 names the campaign option start_at, which holds for every row: give it in"
        " the options, or rename the column to pass it to the agent in additional_params"
    )
    # every option a query takes, but name (a row's too), timezone (a row's own) and options
    from common.campaigns import csv_rows
    from common.campaigns.request import QUERY_PARAMS

    assert set(QUERY_PARAMS) - {"name", "timezone", "options"} == csv_rows._CAMPAIGN_OPTIONS


def test_a_quoted_cell_after_a_comma_and_a_space_is_read_as_quoted() -> None:
    """`, "Lee, Ann"` was read as two unquoted cells: name '"Lee' and notes ' Ann"', taken
    without a word (and a header's `, "name"` named no call field but '"name"')."""
    data = b'phone_number, "name",notes\r\n+14155550123, "Lee, Ann"\r\n+14155550124, "l1\r\nl2"\r\n'
    result = parse_csv(data)
    assert result.errors == []
    assert result.rows == [
        CsvRow(2, {"phone_number": "+14155550123", "name": "Lee, Ann"}, {}),
        CsvRow(3, {"phone_number": "+14155550124", "name": "l1\nl2"}, {}),
    ]
