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


def mask_digits(text: str) -> str:
    """Free text (an error message, a request line) with every run of 7+ digits masked to its
    last 4, so a phone number quoted anywhere in it never reaches a log whole."""
    return _LONG_DIGITS.sub(lambda m: "•" * (len(m.group()) - 4) + m.group()[-4:], text)
