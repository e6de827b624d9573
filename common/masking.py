"""Redaction for logs: phone numbers keep their last four digits, never the rest."""

from __future__ import annotations


def mask_phone(number: str) -> str:
    """`+1234567890` -> `+1•••••7890`: enough to tell calls apart, not to dial them."""
    if len(number) < 8:
        return "•" * len(number)
    return number[:2] + "•" * (len(number) - 6) + number[-4:]
