"""Masking the numbers written after a `+` costs the text's length, not its square. `+` is a
separator too, and the pattern tried from each `+` read the rest of a run of them again: 8,000
of them took 2 s of the server's one thread (remote_text masks LiveKit's error message and a
SIP reason phrase before cutting them; an error's log line masks the request's path whole)."""

from __future__ import annotations

import pytest

from common.masking import mask_digits, redact, remote_text

# By the old pattern, ~10^11 steps (pytest's timeout fails it); in one pass, milliseconds.
PLUSES = "+" * 300_000


def test_a_long_run_of_plus_signs_is_read_once() -> None:
    assert mask_digits(PLUSES) == PLUSES
    assert mask_digits(PLUSES + "14155550100") == PLUSES + "•••••••0100"
    assert remote_text(f"SIP 486 {PLUSES}") == "SIP 486 " + "+" * 291 + "…"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call +1 (415) 555-0100 now", "call +• (•••) •••-0100 now"),
        ("/dnc/%2B14155550100?x=1", "/dnc/%2B•••••••0100?x=1"),
        ("/dnc/%2b%31%34%31%35%35%35%35%30%31%30%30", "/dnc/%2b•••••••%30%31%30%30"),
        ("12+34 + 5-6", "12+34 + 5-6"),  # fewer than 7 digits: no number
        ("a+ +1 415 555 0100 +", "a+ +• ••• ••• 0100 +"),  # from the run's first +
        ("+%E2%80%8B14155550100", "+%E2%80%8B•••••••0100"),
        ("call-0e79890193b5 +14155550100", "call-0e79890193b5 +•••••••0100"),
    ],
)
def test_numbers_are_masked_as_before(text: str, masked: str) -> None:
    assert redact(text) == masked
