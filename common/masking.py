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


_LONG_DIGITS = re.compile(r"[0-9]{7,}")
# A number as a client may write it: `+` (or `%2B` in a URL), then digits with separators in
# between: - . ( ) space, and their URL encodings (%20 %2D %2E %28 %29, or + for a space).
_PLUS_NUMBER = re.compile(r"(?:\+|%2[Bb])(?:[0-9]|[-.() +]|%2[0DdEe89])*[0-9]")
_DIGIT = re.compile(r"[0-9]")


def _mask_separated(match: re.Match[str]) -> str:
    text = match.group()
    # The digits of the percent-escapes (%20, %2D, ...) are not the number's: keep them.
    escapes = [(m.start(), m.end()) for m in re.finditer(r"%2[0-9A-Fa-f]", text)]
    digits = [
        m.start() for m in _DIGIT.finditer(text) if not any(a <= m.start() < b for a, b in escapes)
    ]
    if len(digits) < 7:
        return text
    masked = set(digits[:-4])
    return "".join("•" if i in masked else ch for i, ch in enumerate(text))


def mask_digits(text: str) -> str:
    """Free text (an error message, a request line) with every phone-like number masked to
    its last 4 digits, so a number quoted anywhere in it never reaches a log whole: runs of 7+
    digits, and numbers after a `+` written with separators (`+1-415-555-0199`,
    `%2B1(415)555.0100`)."""
    text = _PLUS_NUMBER.sub(_mask_separated, text)
    return _LONG_DIGITS.sub(lambda m: "•" * (len(m.group()) - 4) + m.group()[-4:], text)
