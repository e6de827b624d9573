"""Redaction for logs: phone numbers keep their last four digits, never the rest."""

from __future__ import annotations

import re
import unicodedata


def mask_phone(number: str) -> str:
    """`+1234567890` -> `+1•••••7890`: enough to tell calls apart, not to dial them."""
    if len(number) < 8:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]


LOG_TEXT_CHARS = 80
# A call id in log text (`call-<12 hex>`): kept whole by the masking, and the call a line is
# about when it was logged without the field.
CALL_ID_IN_TEXT = re.compile(r"call-[0-9a-f]{12}(?![0-9a-zA-Z])")
# A campaign id in log text (`cmp-<12 hex>`): the campaign a line is about, likewise.
CAMPAIGN_ID_IN_TEXT = re.compile(r"cmp-[0-9a-f]{12}(?![0-9a-zA-Z])")


def clip_for_log(text: str, limit: int = LOG_TEXT_CHARS) -> str:
    """Free text (instructions) folded to one line of at most `limit` characters, for logs."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A digit, or a digit's URL escape (%30-%39): a number in a URL may be written either way.
_DIGIT = r"(?:[0-9]|%3[0-9])"
_LONG_DIGITS = re.compile(f"{_DIGIT}{{7,}}")
# What may stand between a number's digits, as a client may write it: - . ( ) + and any
# space (a tab, a no-break or thin space), and what else the server takes between them
# (common/calls/phone.py's SEPARATOR: typographic dashes, a minus sign, direction marks and
# zero-width characters), plain or URL-escaped (UTF-8). A number the server takes is masked:
# every space `\s` takes is escaped too (line breaks, U+0085, U+1680, U+2028/9, U+205F).
_SEPARATOR = (
    r"(?:[-.()+\s\u2010-\u2015\u2212\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
    r"|%2[0BDE89]|%0[9A-D]|%1[C-F]|%C2%A0|%C2%85|%E1%9A%80|%E2%80%8[0-9A-F]|%E2%80%9[0-5]"
    r"|%E2%80%A[8-9A-F]|%E2%81%9F|%E2%81%A[06-9]|%E2%88%92|%EF%BB%BF|%E3%80%80)"
)
# A number: `+` (or `%2B` in a URL), then digits and separators, ending on a digit. `+` is a
# separator too, so a pattern for it tried from each `+` read the rest of a run of them again:
# 8,000 `+` took 2 s (a LiveKit error or SIP reason read before it is cut, a request's path).
# Found in one pass instead (`_masked_plus_numbers`): in each run of separators and digits,
# from its first `+` to its last digit, which is what that pattern matched.
_NUMBER_RUN = re.compile(rf"(?:{_SEPARATOR}|{_DIGIT})++", re.I)
_PLUS_SIGN = re.compile(r"\+|%2b", re.I)
# From a `+`, the run up to its last digit (the engine backs off the separators after it).
_TO_LAST_DIGIT = re.compile(rf"(?:{_SEPARATOR}|{_DIGIT})*{_DIGIT}", re.I)
# A number without its `+` (forgotten, or a national number: `/dnc/1-415-555-0199`,
# `?phone_number=(415)%20555-0199`), written with separators: 9+ digits apart by - ( ) or an
# escaped space; not a date (8 digits), an address (dots) nor a log line's fields (plain
# spaces: "200 24601 1234"). Not begun inside an escape (`%20` is no digits).
_NOT_IN_ESCAPE = r"(?<!%)(?<!%[0-9A-Fa-f])"
_BARE_SEPARATOR = r"(?:[-()]|%2[0D89])"
_BARE_NUMBER = re.compile(rf"{_NOT_IN_ESCAPE}{_DIGIT}(?:{_BARE_SEPARATOR}*{_DIGIT}){{8,}}", re.I)
# In a match: any escape (whose hex digits are not the number's) or a digit.
_TOKEN = re.compile(r"%[0-9A-Fa-f]{2}|[0-9]")


def _mask_number(match: re.Match[str]) -> str:
    """Every digit of the match but the last four (a digit's escape counts as its digit)
    becomes one `•`; fewer than seven digits are not a phone number: left alone."""
    return _masked(match.group())


def _masked(text: str) -> str:
    """`_mask_number` of a number's text."""
    digits = [m for m in _TOKEN.finditer(text) if len(m.group()) == 1 or m.group()[1] == "3"]
    if len(digits) < 7:
        return text
    out: list[str] = []
    end = 0
    for digit in digits[:-4]:
        out += [text[end : digit.start()], "•"]
        end = digit.end()
    out.append(text[end:])
    return "".join(out)


def mask_digits(text: str) -> str:
    """Free text (an error message, a request line) with every phone-like number masked to
    its last 4 digits, so a number quoted anywhere in it never reaches a log whole: runs of 7+
    digits, and numbers after a `+` written with separators (`+1-415-555-0199`,
    `%2B1(415)555.0100`), their digits plain or URL-escaped (`%31%34%31...`)."""
    masked = _BARE_NUMBER.sub(_mask_number, _masked_plus_numbers(text))
    return _LONG_DIGITS.sub(_mask_number, masked)


def _masked_plus_numbers(text: str) -> str:
    """`text` with each number written after a `+` masked: in each run of separators and
    digits, the text from its first `+` (or `%2B`) to its last digit after it. Both are found
    by the regex engine: a loop over each token of each run cost ~0.5 µs a character, and
    each of an access line's three fields (request line, Referer, User-Agent: 1,200
    characters of each read, no token needed) up to 0.7 ms of the loop."""
    out: list[str] = []
    kept_from = pos = 0
    # Only the runs holding a `+`: a `%` in a run starts an escape, so a `%2B` found is one,
    # and the run read on from its first `+` ends where the whole run does.
    while (plus := _PLUS_SIGN.search(text, pos)) is not None:
        run = _NUMBER_RUN.match(text, plus.start())
        pos = run.end() if run else plus.end()
        number = _TO_LAST_DIGIT.match(text, plus.start(), pos)
        if number:
            out += [text[kept_from : number.start()], _masked(number.group())]
            kept_from = number.end()
    return "".join(out) + text[kept_from:] if out else text


# The ids `redact` keeps whole: a call's or a campaign's.
_IDS_IN_TEXT = re.compile(f"{CALL_ID_IN_TEXT.pattern}|{CAMPAIGN_ID_IN_TEXT.pattern}")


def redact(text: str) -> str:
    """`text` with phone-like digit runs masked (mask_digits), call and campaign ids kept
    whole: an id such as `call-0e79890193b5` holds a run of 8 digits, and masked it names no
    call (a campaign's, `cmp-0e79890193b5`, masked in the access log as `cmp-0e••••0193b5`,
    was found by no search for it, nor carried as the JSON line's `campaign_id`)."""
    parts = _IDS_IN_TEXT.split(text)
    ids = _IDS_IN_TEXT.findall(text)
    out = [mask_digits(parts[0])]
    for call_id, rest in zip(ids, parts[1:], strict=True):
        out += [call_id, mask_digits(rest)]
    return "".join(out)


def redact_cut(text: str, limit: int) -> str:
    """`redact(text)` cut to `limit` characters: masked before it is cut, so a number across
    the cut shows no more than its last four digits (cut first, it kept those before the cut,
    `+141555`, or its middle digits as if they were its last four, `+•••5555`). What is
    masked is cut at four times `limit` first (a masked digit escape, `%31`, is one
    character), bounding its cost."""
    return redact(text[: 4 * limit])[:limit]


REMOTE_TEXT_CHARS = 300
# What reads as a credential in another service's words: a JWT (LiveKit's tokens are), or
# whatever follows "Bearer" (a proxy echoing our request's Authorization header).
_TOKEN_LIKE = re.compile(
    r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?|\bbearer\s+\S+", re.IGNORECASE
)


def without_tokens(text: str) -> str:
    """`text` with anything shaped like a token (a JWT, whatever follows "Bearer") as
    `[token]`."""
    return _TOKEN_LIKE.sub("[token]", text)


def remote_text(text: str, limit: int = REMOTE_TEXT_CHARS) -> str:
    """Words another service sent back (LiveKit's error message), fit to store and show:
    anything shaped like a token left out, control characters as spaces and lone surrogates
    (no UTF-8 can hold them: storing one failed) as U+FFFD, on one line of at most `limit`
    characters, digits masked as `redact` masks them."""
    text = without_tokens(text)
    text = "".join(
        " " if unicodedata.category(c) == "Cc" else "\ufffd" if "\ud800" <= c <= "\udfff" else c
        for c in text
    )
    return clip_for_log(redact(text), limit)
