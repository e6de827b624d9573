"""Uploaded recipient lists (CSV) into rows of call fields, with row-numbered errors (pure).

The format is what spreadsheets export: UTF-8 with or without a BOM (or the charset its
Content-Type declares, `text/csv; charset=windows-1252`: see `csv_codec`), CRLF or LF line ends
(a DOS end-of-file mark, 0x1A, as the last byte is no row),
RFC 4180 quoting (commas, newlines and doubled quotes inside quoted fields, spaces between a
comma and an opening quote skipped), read by the
stdlib `csv` module in strict mode so that an unterminated quote is an error rather than
the rest of the file silently swallowed into one cell.

Row numbers are what a spreadsheet user sees: the header is row 1, the first data row is
row 2, and every CSV record counts as one row, blank ones included (a spreadsheet shows
them) and a quoted cell spanning several lines counting once. So "row 17" is row 17 in
Excel, not line 17 of the file.

Two kinds of problems:
  * the whole file is refused (`CsvRejected`): not UTF-8, no header, a header without
    `phone_number`, naming a column twice or a call field a row cannot set (ringing_timeout_s)
    or a name additional_params may not use (call_id), malformed quoting, more than `max_rows`;
  * a row is refused (`RowError` in `CsvRows.errors`, the row left out of `rows`): a
    non-blank cell beyond the named columns (typically an unquoted comma that shifted
    the row), a blank `phone_number`, or a header again (a cell `phone_number`: two lists
    pasted together). Values themselves are validated by the caller.

Cells are trimmed and a CRLF inside a quoted cell becomes LF; a blank cell is a missing
value (None for a call field, left out of additional_params). Blank cells past the last
named column (trailing commas a spreadsheet adds) are ignored, so are rows whose cells are
all blank.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.calls.request import FIELDS
from common.campaigns.windows import is_zone_key
from common.config_store.model import RESERVED_KEYS
from common.text import shown_text

if TYPE_CHECKING:
    from _csv import Reader

CALL_FIELDS: frozenset[str] = frozenset(
    {
        "phone_number",
        "name",
        "dynamic_instruction",
        "language",
        "emotion",
        "first_message",
        "webhook_url",
    }
)
PHONE_FIELD = "phone_number"
# The call fields no column sets (a column so named is refused: in additional_params it was
# silently no setting); additional_params holds the other columns.
_UNMAPPED_FIELDS = FIELDS - CALL_FIELDS - {"additional_params"}
MAX_ROWS = 100_000
# Named columns a header may have: the call fields and a recipient's additional_params
# (whose whole is bounded in bytes anyway). A header of eight million repeated names took
# 350 bytes of memory per byte of body, one error each.
MAX_COLUMNS = 1000
HEADER_ROW = 1
# A header's names for the number that are not phone_number (a spreadsheet's "Phone Number",
# "Mobile", "tel"): the refusal names the one to rename.
_PHONE_ALIKE = re.compile(
    r"(?:phone|mobile|cell|tel|telephone|number|msisdn)(?:[ _.-]*(?:number|no\.?|#))?",
    re.IGNORECASE,
)

# The campaign's options as query parameters name them (a CSV upload's): none is a row's.
_CAMPAIGN_OPTIONS = frozenset(
    {
        "start_at",
        "window_start",
        "window_end",
        "window_days",
        "calls_per_second",
        "max_concurrent",
        "retry_on",
        "max_attempts",
        "delay_s",
        "invalid_rows",
    }
)
# What a spreadsheet puts between a call field's words ("First Message", "webhook-url"), or
# nothing at all ("FirstMessage", a CRM export's): a name is compared without them.
_SEPARATORS = re.compile(r"[\s._-]+")

_DOS_END_OF_FILE = "\x1a"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


@dataclass(frozen=True)
class RowError:
    """A problem in spreadsheet row `row` (header = 1), about column `field`."""

    row: int
    field: str
    error: str

    def to_json(self) -> dict[str, str | int]:
        return {"row": self.row, "field": self.field, "error": self.error}


@dataclass(frozen=True)
class CsvRow:
    """One recipient: `fields` has a key for each call-field column of the header (None
    when blank or missing); `additional_params` holds the other non-blank cells."""

    number: int
    fields: dict[str, str | None]
    additional_params: dict[str, str] = field(default_factory=dict)
    errors: tuple[RowError, ...] = ()  # a refused row's (its fields: its phone_number alone)


@dataclass(frozen=True)
class CsvRows:
    """The usable rows, and the rows refused (each refused row is in errors, not in rows;
    and in refused, with its number cell, to be kept as an invalid recipient)."""

    rows: list[CsvRow]
    errors: list[RowError]
    refused: list[CsvRow] = field(default_factory=list)


class CsvRejected(ValueError):
    """The whole file is refused; `errors` says where and why."""

    def __init__(self, errors: list[RowError]) -> None:
        super().__init__("; ".join(f"row {e.row}: {e.field}: {e.error}" for e in errors))
        self.errors = errors


class UnknownCharset(ValueError):
    """A declared charset Python has no text codec for (or one that is no text encoding,
    such as base64)."""


# Codecs read as UTF-8: ASCII is a subset of it (clients label plain files us-ascii).
_UTF8_CODECS = frozenset(("utf-8", "utf-8-sig", "ascii"))
# Text codecs Python has that are no charset of a file: `undefined` refuses every decode,
# and idna and punycode (host names) refuse a list's text with a bare UnicodeError, which
# neither the decode nor its error message (errors="replace") is ready for: each was a 500.
_NOT_CHARSETS = frozenset(("undefined", "idna", "punycode"))


def csv_codec(charset: str | None) -> str:
    """The codec of a declared charset (None, or blank: UTF-8), as Python names it; raise
    UnknownCharset for one Python cannot decode text with."""
    if charset is None or not charset.strip():
        return "utf-8"
    try:
        name = codecs.lookup(charset.strip()).name
        if name in _NOT_CHARSETS:
            raise LookupError(name)
        _text_codec(name)
    except LookupError:
        raise UnknownCharset(charset) from None
    if name == "iso8859-1":
        # What a client labels Latin-1 is Windows-1252 (Excel's "ANSI" on Western Windows),
        # as the WHATWG Encoding Standard reads the label: its 0x80-0x9F are €, quotes and
        # dashes, not the control characters Latin-1 has there.
        return "cp1252"
    return "utf-8" if name in _UTF8_CODECS else name


def _text_codec(name: str) -> None:
    """LookupError for a codec that is no text encoding (rot13, base64): bytes.decode
    refuses those before decoding anything."""
    try:
        b"-".decode(name)
    except UnicodeDecodeError:  # a text encoding that a lone "-" is no text of (UTF-16)
        pass


def parse_csv(
    data: bytes,
    *,
    max_rows: int = MAX_ROWS,
    call_fields: Collection[str] = CALL_FIELDS,
    codec: str = "utf-8",
) -> CsvRows:
    """Parse an uploaded recipient list; raise CsvRejected if the file as a whole is unusable.

    `call_fields` names the columns that become call fields (matched case-insensitively);
    `phone_number` is always one. Every other named column goes to additional_params under
    its header name as written (trimmed). `codec` (csv_codec) decodes it; a file starting with
    UTF-8's BOM is UTF-8 whatever its label says (the bytes say which).
    """
    text = (
        _decode(data)
        if codec == "utf-8" or data.startswith(codecs.BOM_UTF8)
        else (_decode_declared(data, codec))
    )
    known = {name.strip().lower() for name in call_fields} | {PHONE_FIELD}
    # A space after a comma before a quoted cell (`, "Lee, Ann"`, as people and some tools
    # write it) is skipped: the cell is read as quoted. It was read as text starting with a
    # quote, its comma splitting it: name '"Lee' taken and ' Ann"' in the next column.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    records = _numbered(reader)
    try:
        header = next(records, None)
    except CsvRejected:
        # A header of quoted names in another separator's columns ('"phone_number";"name"',
        # as Excel in many locales and most CRM exports write it) is malformed read by commas:
        # told "malformed CSV: ',' expected after '\"'", its user could not tell why. Its
        # unquoted form is told the separator (_columns); so is this one.
        if (other := _other_separator(text)) is None:
            raise
        raise CsvRejected(
            [
                RowError(
                    HEADER_ROW,
                    "header",
                    f"columns are separated by commas, not {other!r} as in this file: save"
                    " it as CSV UTF-8 (comma-separated)",
                )
            ]
        ) from None
    if header is None or not any(cell.strip() for cell in header[1]):
        what = "the file is empty" if header is None else "row 1 is blank"
        raise CsvRejected([RowError(HEADER_ROW, "header", f"{what}; row 1 must name the columns")])
    sep = _separator_line(header[1])
    if sep is not None:
        # Excel's separator line ("sep=," or "sep=;", which Excel reads and hides): told
        # "the header must have this column; it names 'sep='", which its user never saw.
        how = (
            "delete it, so that row 1 is the header"
            if sep == ","
            else f"save the file as CSV UTF-8 (separated by commas, not {sep!r}) with no such line"
        )
        line = f"sep={sep}"
        raise CsvRejected(
            [RowError(HEADER_ROW, "header", f"row 1 is Excel's separator line {line!r}: {how}")]
        )
    columns = _columns(header[1], known)
    # Each row starts with every call-field column blank: a row's cost is its own cells,
    # not the header's width (a header of a million columns over short rows).
    blank_fields = {name.lower(): None for name in columns if name.lower() in known}
    rows: list[CsvRow] = []
    errors: list[RowError] = []
    refused: list[CsvRow] = []
    phone_at = [name.lower() for name in columns].index(PHONE_FIELD)
    count = blank = 0
    for number, cells in records:
        cells = [cell.strip() for cell in cells]
        if not any(cells):
            # Skipped, but counted: a body of blank lines alone was read to its end, 60 MiB
            # of newlines in 18 s, while every other request waited.
            blank += 1
            if blank > max_rows:
                raise CsvRejected([RowError(number, "file", f"more than {max_rows} blank rows")])
            continue
        count += 1
        if count > max_rows:
            raise CsvRejected([RowError(number, "file", f"more than {max_rows} data rows")])
        if any(cell.lower() == PHONE_FIELD for cell in cells):
            # Two exports pasted together: the second's header was told "phone_number: must
            # be E.164", and the rows after one naming the columns otherwise went on being
            # read in row 1's order.
            errors.append(_repeated_header(number, cells, columns))
            refused.append(CsvRow(number, {PHONE_FIELD: None}, errors=(errors[-1],)))
            continue
        before = len(errors)
        row = _row(number, cells, columns, blank_fields, errors)
        if row is not None:
            rows.append(row)
        else:
            phone = cells[phone_at] if phone_at < len(cells) else ""
            refused.append(CsvRow(number, {PHONE_FIELD: phone or None}, errors=(*errors[before:],)))
    return CsvRows(rows, errors, refused)


def _repeated_header(number: int, cells: list[str], columns: list[str]) -> RowError:
    """The refusal of a data row that is a header (a cell of it is `phone_number`)."""
    names = [cell.lower() for cell in cells if cell]
    if names == [name.lower() for name in columns if name]:
        why = "repeats the header (row 1): two lists pasted together? delete this row"
    else:
        why = (
            "is a header naming other columns than row 1 (two lists pasted together?): the"
            " rows after it are read in row 1's columns; put them in those, and delete this row"
        )
    return RowError(number, "row", why)


def _separator_line(cells: list[str]) -> str | None:
    """The separator an Excel separator line names ("sep=;" read as one cell, "sep=," as
    "sep=" and a blank cell), None when row 1 is no such line."""
    if not cells or any(cell.strip() for cell in cells[1:]):
        return None
    found = re.fullmatch(r"sep=(.)", cells[0], re.IGNORECASE)
    if found is not None:
        return found[1]
    return "," if len(cells) == 2 and cells[0].lower() == "sep=" else None


# How much of a file the separator of a header malformed by commas is looked for in: its
# first row, and no copy of a whole 64 MiB body per separator tried.
_HEADER_SNIFF_CHARS = 1 << 20


def _other_separator(text: str) -> str | None:
    """The separator (';', tab or '|') that reads row 1, malformed by commas, as a row of
    several cells; None when none does (a comma-separated file malformed otherwise)."""
    head = text[:_HEADER_SNIFF_CHARS]
    for sep in (";", "\t", "|"):
        reader = csv.reader(
            io.StringIO(head, newline=""), delimiter=sep, strict=True, skipinitialspace=True
        )
        try:
            cells = next(reader, [])
        except csv.Error:
            continue
        if len(cells) > 1:
            return sep
    return None


def _decode(data: bytes) -> str:
    """UTF-8 text without its BOM; anything else refused with the offending byte's offset
    (and row), since "not UTF-8" alone does not help anyone find the cell to fix."""
    if data.startswith(_UTF32_BOMS):  # before UTF-16's: UTF-32-LE's BOM starts as its does
        raise CsvRejected(
            [
                RowError(
                    HEADER_ROW,
                    "file",
                    "is UTF-32 (it starts with a UTF-32 BOM); save it as CSV UTF-8",
                )
            ]
        )
    if data.startswith(_UTF16_BOMS):
        raise CsvRejected(
            [
                RowError(
                    HEADER_ROW,
                    "file",
                    "is UTF-16 (it starts with a UTF-16 BOM); save it as CSV UTF-8",
                )
            ]
        )
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\x00", start)
    if nul >= 0:
        raise CsvRejected([_byte_error(data, nul, "contains a NUL byte (UTF-16 or binary?)")])
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise CsvRejected(
            [_byte_error(data, offset, f"is not UTF-8: byte 0x{data[offset]:02X}")]
        ) from None
    # A DOS end-of-file mark (Ctrl-Z, 0x1A), which old tools and `copy /a` put after the last
    # line: read as a row of its own, it was refused as a phone_number not E.164 (a row no
    # spreadsheet shows), or after the last cell as a name holding a control character.
    return text.removesuffix(_DOS_END_OF_FILE)


def _decode_declared(data: bytes, codec: str) -> str:
    """Text in the charset its client declared (not UTF-8): a list a spreadsheet saved in
    Windows-1252 or Latin-1 was refused as "not UTF-8" although its Content-Type said which
    it was. Bytes that codec cannot read are refused as UTF-8's are, offset and row."""
    try:
        text = data.decode(codec).removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise CsvRejected(
            [
                _byte_error(
                    data,
                    exc.start,
                    f"is not {codec}, as its Content-Type says: byte 0x{data[exc.start]:02X}",
                    codec,
                )
            ]
        ) from None
    if (nul := text.find("\x00")) >= 0:
        row = sum(1 for _ in csv.reader(io.StringIO(text[:nul] + "x", newline="")))
        raise CsvRejected([RowError(row, "file", "contains a NUL character (binary?)")])
    return text.removesuffix(_DOS_END_OF_FILE)


def _byte_error(data: bytes, offset: int, what: str, codec: str = "utf-8") -> RowError:
    """The error for a bad byte, numbered by the spreadsheet row that holds it."""
    before = data[:offset].decode(codec, errors="replace").removeprefix("\ufeff")
    # A lenient reader over the text before the byte plus one character: its record count
    # is the number of the record the byte falls in, even inside an open quoted cell.
    row = sum(1 for _ in csv.reader(io.StringIO(before + "x", newline="")))
    return RowError(row, "file", f"{what} at byte offset {offset}; save it as CSV UTF-8")


def _numbered(reader: Reader) -> Iterator[tuple[int, list[str]]]:
    """Records with their spreadsheet row numbers; malformed quoting refuses the file."""
    number = 0
    while True:
        number += 1
        first_line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            lines = reader.line_num - first_line + 1
            raise CsvRejected([RowError(number, "file", _malformed(str(exc), lines))]) from None
        yield number, cells


_FIELD_LIMIT = "field larger than field limit"
_NEVER_CLOSED = "malformed CSV: a quote opened in this row is never closed"
_CLOSE_IT = 'close it, or write a quote that is part of a cell\'s text as two ("")'
_TEXT_AFTER_QUOTE = "',' expected after '\"'"
_TEXT_AFTER_QUOTE_TOLD = (
    "malformed CSV: a quoted cell's closing quote is followed by more text before the next"
    " comma (a space counts); quote the whole cell, writing each quote that is part of its"
    ' text as two ("""Bob"" Smith")'
)


def _malformed(said: str, lines: int) -> str:
    """What is wrong with a record the csv module refused (`said`), read over `lines` lines
    of the file. A quote never closed was told "unexpected end of data" or, in a long list
    (the rows after it read into its cell past the module's limit), "field larger than field
    limit (131072)": its user looked for a long cell in a row of short ones; text after a
    closing quote, "',' expected after '\"'", which named neither."""
    if said == "unexpected end of data" or (said.startswith(_FIELD_LIMIT) and lines > 1):
        swallowed = ", and the lines after it were read into its cell" if lines > 1 else ""
        return f"{_NEVER_CLOSED}{swallowed}; {_CLOSE_IT}"
    if said == _TEXT_AFTER_QUOTE:  # `"Bob" Smith`, or `"Bob" ,` with a space before its comma
        return _TEXT_AFTER_QUOTE_TOLD
    if said.startswith(_FIELD_LIMIT):
        limit = csv.field_size_limit()
        return f"malformed CSV: a cell in this row is longer than {limit:,} characters"
    return f"malformed CSV: {said}"


def _columns(header: list[str], known: Collection[str]) -> list[str]:
    """Trimmed header names, '' for an unnamed column; refuse a header that lacks
    phone_number, names a column twice (which cell would win is anyone's guess), names a
    call field a row cannot set (one not in `known`), or one by a name additional_params may
    not use."""
    columns = [_header_name(name) for name in header]
    named = sum(1 for name in columns if name)
    if named > MAX_COLUMNS:
        raise CsvRejected(
            [RowError(HEADER_ROW, "header", f"names {named} columns; at most {MAX_COLUMNS}")]
        )
    errors: list[RowError] = []
    fields = {_SEPARATORS.sub("", name): name for name in known}
    options = {_SEPARATORS.sub("", name): name for name in _CAMPAIGN_OPTIONS}
    seen: dict[str, int] = {}
    zone_at: int | None = None  # the column of the recipient's own time zone
    for index, name in enumerate(columns, start=1):
        if not name:
            continue
        key = name.lower()
        if key in seen:
            errors.append(RowError(HEADER_ROW, name, f"column {index} repeats column {seen[key]}"))
        else:
            seen[key] = index
            if is_zone_key(name):
                if zone_at is not None:  # "timezone" and "Time Zone": one read, one not
                    errors.append(
                        RowError(
                            HEADER_ROW,
                            name,
                            f"column {index} names the recipient's time zone, as column"
                            f" {zone_at} does; keep one",
                        )
                    )
                else:
                    zone_at = index
        squeezed = _SEPARATORS.sub("", key)
        spelled = fields.get(squeezed) or options.get(squeezed, "")
        if spelled != key and spelled in known and spelled != PHONE_FIELD:  # (said below)
            # "First Message", "webhook url": set no call field, but went to additional_params
            # unsaid: each call opened with the default greeting, its events to another URL.
            errors.append(
                RowError(
                    HEADER_ROW,
                    name,
                    f"column {index} is not the call field {spelled}, which a column sets only"
                    f" so named: rename it {spelled} (or, to pass it to the agent in"
                    " additional_params, to a name no call field has)",
                )
            )
        elif spelled in _CAMPAIGN_OPTIONS:
            # A start_at or window_start column went to additional_params: each row was called
            # at the campaign's time, with nothing said.
            errors.append(
                RowError(
                    HEADER_ROW,
                    name,
                    f"column {index} names the campaign option {spelled}, which holds for every"
                    " row: give it in the options, or rename the column to pass it to the agent"
                    " in additional_params",
                )
            )
        elif key in _UNMAPPED_FIELDS and key not in known:
            # ringing_timeout_s went to additional_params, where no call reads it: each row's
            # call rang for the default time, with nothing said.
            errors.append(
                RowError(
                    HEADER_ROW,
                    name,
                    f"column {index} names a call field a CSV row cannot set; set it for every"
                    " row in the options' defaults",
                )
            )
        elif name in RESERVED_KEYS and key not in known:
            # Refused in every row's additional_params, each row's error naming that field:
            # a list with a last_updated column was 100,000 times the same refusal.
            errors.append(
                RowError(
                    HEADER_ROW,
                    name,
                    f"column {index} would go to additional_params, which may not use this"
                    " name (the call's own settings are kept under it); rename the column",
                )
            )
    if PHONE_FIELD not in seen:
        why = "the header must have this column"
        # A header read whole as one column ("phone_number;name") starts with the separator
        # its file has; one column of several named "Notes; misc" is no sign of one.
        first = next((name for name in columns if name), "")
        other = next((sep for sep in (";", "\t", "|") if sep in first), None)
        if other is not None:  # one column named "phone_number;name": another separator
            why += f" (columns are separated by commas, not {other!r})"
        else:  # say what it has: "Phone Number" or "phone" was refused without a word of it
            why += _header_names(columns)
        errors.append(RowError(HEADER_ROW, PHONE_FIELD, why))
    if errors:
        raise CsvRejected(errors)
    return columns


# Format characters that are part of a name's spelling between the letters or emoji they
# join: the joiners (Persian writes "نام‌خانوادگی", last name, with a ZWNJ; Indic scripts and
# emoji such as 👩‍💻 use them too) and the tag characters after a flag emoji. Taken out, the
# column's additional_params key was misspelled, and no longer the key a campaign's defaults
# (JSON) give that value under. No ASCII letter joins: next to one, or at an end, they go.
_JOINERS = "\u200c\u200d"
_TAGS = range(0xE0020, 0xE0080)


def _header_name(cell: str) -> str:
    """A header cell's column name: trimmed, without the invisible characters (Unicode's
    format characters: a second BOM, a zero-width space pasted in) a spreadsheet shows
    nothing of. `name\u200b` went to additional_params, each call placed as "Guest", and
    `\ufeffphone_number` (a BOM written twice) refused the file for lacking phone_number.
    Joiners and tags where they join are its spelling (_JOINERS)."""
    if cell.isascii():  # (no ASCII character is invisible: the usual header's cost alone)
        return cell.strip()
    kept = [c for c in cell if unicodedata.category(c) != "Cf" or c in _JOINERS or ord(c) in _TAGS]
    return "".join(c for at, c in enumerate(kept) if _spells(kept, at)).strip()


def _spells(chars: list[str], at: int) -> bool:
    """Whether `chars[at]` is kept: any but a joiner or tag; a joiner or tag only after a
    character that is not ASCII (a joiner before one too)."""
    c = chars[at]
    if c not in _JOINERS and ord(c) not in _TAGS:
        return True
    if at == 0 or chars[at - 1].isascii():
        return False
    return c not in _JOINERS or (at + 1 < len(chars) and not chars[at + 1].isascii())


def _header_names(columns: list[str]) -> str:
    """What a header lacking phone_number names instead (ten names at most, each cut at 40
    characters), and the one that looks like the number, to rename."""
    named = [name for name in columns if name]
    shown = ", ".join(repr(_cut(name)) for name in named[:10])
    if len(named) > 10:
        shown += f" and {len(named) - 10} more"
    said = f"; it names {shown}" if named else ""
    alike = next((name for name in named if _PHONE_ALIKE.fullmatch(name)), None)
    return said + (f": rename {_cut(alike)!r} to {PHONE_FIELD}" if alike is not None else "")


def _cut(name: str) -> str:
    return shown_text(name, 41)  # 40 characters and an ellipsis, at most


def _row(
    number: int,
    cells: list[str],
    columns: list[str],
    blank_fields: dict[str, None],
    errors: list[RowError],
) -> CsvRow | None:
    """One data row (cells trimmed), or None after recording why it is refused (at most one
    error per kind of problem: a row of a million stray cells is one refusal, not a million)."""
    fields: dict[str, str | None] = dict(blank_fields)
    params: dict[str, str] = {}
    unnamed: int | None = None  # the first column with a value but no header
    count = 0  # and how many such columns
    for index, (name, value) in enumerate(zip(columns, cells, strict=False)):
        if not name:
            if value:
                unnamed = index if unnamed is None else unnamed
                count += 1
        elif (key := name.lower()) in fields:
            fields[key] = value.replace("\r\n", "\n") or None
        elif value:
            params[name] = value.replace("\r\n", "\n")
    refused = False
    if unnamed is not None:
        more = f" (and {count - 1} more columns)" if count > 1 else ""
        errors.append(RowError(number, f"column {unnamed + 1}", f"has a value but no header{more}"))
        refused = True
    extra = next((i for i in range(len(columns), len(cells)) if cells[i]), None)
    if extra is not None:
        errors.append(
            RowError(
                number,
                f"column {extra + 1}",
                f"has {len(cells)} fields but the header names {len(columns)} columns;"
                " quote cells that contain commas",
            )
        )
        refused = True
    if not fields[PHONE_FIELD]:
        errors.append(RowError(number, PHONE_FIELD, "is empty"))
        refused = True
    return None if refused else CsvRow(number, fields, params)
