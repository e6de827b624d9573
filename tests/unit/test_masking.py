"""Phone numbers in log text keep their last four digits, however the client wrote them;
other numbers in an access-log line (times, addresses, sizes) are left alone."""

from __future__ import annotations

import pytest

from common.masking import mask_digits


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("+14155550199", "+•••••••0199"),
        ("/dnc/+1-415-555-0199", "/dnc/+•-•••-•••-0199"),
        ("/dnc/%2B34%20612%2000%200111", "/dnc/%2B••%20•••%20••%200111"),
        ("after=%2B1(415)555.0100", "after=%2B•(•••)•••.0100"),
        ("+44 20 7946 0958", "+•• •• •••• 0958"),
        ("call me at 4155550199", "call me at ••••••0199"),
        ("/dnc/%2B%31%34%31%35%35%35%35%30%31%37%37", "/dnc/%2B•••••••%30%31%37%37"),
        ("/dnc/%31%34%31%35%35%35%35%30%31%37%37", "/dnc/•••••••%30%31%37%37"),
        ("/dnc/%2B1415%35%35%350177", "/dnc/%2B•••••••0177"),
    ],
)
def test_phone_numbers_are_masked(text: str, masked: str) -> None:
    assert mask_digits(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        '127.0.0.1 [03/Dec/2026:11:56:24 +0000] "POST /calls/outbound HTTP/1.1" 200 24601 "-"',
        "10.200.100.250 +0000",
        "x +1 2 3",  # fewer than 7 digits after the +
        "start_at=2026-12-07T08:00:00Z",
        "name=%31%32%33",  # three escaped digits
        "/calls?before=%2B%31%32",
    ],
)
def test_other_numbers_are_left_alone(text: str) -> None:
    assert mask_digits(text) == text
