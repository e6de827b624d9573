"""Redaction for logs: phone numbers keep their last four digits, never the rest."""

from __future__ import annotations

import re


def mask_phone(number: str) -> str:
    """`+1234567890` -> `+1•••••7890`: enough to tell calls apart, not to dial them."""
    if len(number) < 8:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]


LOG_TEXT_CHARS = 80


def clip_for_log(text: str) -> str:
    """Free text (instructions) folded to one line of at most 80 characters, for INFO logs."""
    text = " ".join(text.split())
    return text if len(text) <= LOG_TEXT_CHARS else text[: LOG_TEXT_CHARS - 1] + "…"


# A digit, or a digit's URL escape (%30-%39): a number in a URL may be written either way.
_DIGIT = r"(?:[0-9]|%3[0-9])"
_LONG_DIGITS = re.compile(f"{_DIGIT}{{7,}}")
# A number as a client may write it: `+` (or `%2B` in a URL), then digits with separators in
# between: - . ( ) space, and their URL encodings (%20 %2D %2E %28 %29, or + for a space).
_PLUS_NUMBER = re.compile(rf"(?:\+|%2[Bb])(?:{_DIGIT}|[-.() +]|%2[0DdEe89])*{_DIGIT}")
# In a match: separators' escapes (%2X, whose digits are not the number's), digits' escapes,
# and digits.
_TOKEN = re.compile(r"%2[0-9A-Fa-f]|%3[0-9]|[0-9]")


def _mask_number(match: re.Match[str]) -> str:
    """Every digit of the match but the last four (a digit's escape counts as its digit)
    becomes one `•`; fewer than seven digits are not a phone number: left alone."""
    text = match.group()
    digits = [m for m in _TOKEN.finditer(text) if not m.group().startswith("%2")]
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
    return _LONG_DIGITS.sub(_mask_number, _PLUS_NUMBER.sub(_mask_number, text))
