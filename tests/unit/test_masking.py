"""Phone numbers in log text keep their last four digits, however the client wrote them;
other numbers in an access-log line (times, addresses, sizes) are left alone."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from common.calls.phone import _SEPARATORS
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
        # spaces the number normaliser takes, escaped: no-break, tab, thin, ideographic
        ("/dnc/%2B1%C2%A0415%C2%A0555%C2%A00199", "/dnc/%2B•%C2%A0•••%C2%A0•••%C2%A00199"),
        ("/dnc/%2B1%09415%09555%090199", "/dnc/%2B•%09•••%09•••%090199"),
        ("/dnc/%2B1%E2%80%89415%E2%80%895550199", "/dnc/%2B•%E2%80%89•••%E2%80%89•••0199"),
        ("/dnc/%2B1%E3%80%80415%E3%80%805550199", "/dnc/%2B•%E3%80%80•••%E3%80%80•••0199"),
        ("+1\u00a0415\u2009555\u30000199", "+•\u00a0•••\u2009•••\u30000199"),
        (
            "%2b%31%C2%A0%34%31%35%C2%A0%35%35%35%C2%A0%30%31%39%39",
            "%2b•%C2%A0•••%C2%A0•••%C2%A0%30%31%39%39",
        ),
        # typographic dashes and invisible marks, which the number normaliser takes too
        (
            "/dnc/%2B34%E2%80%91612%E2%80%91345%E2%80%91678",
            "/dnc/%2B••%E2%80%91•••%E2%80%91••5%E2%80%91678",
        ),
        (
            "/dnc/%2B34%E2%88%92612%e2%80%93345%E2%80%8B678",
            "/dnc/%2B••%E2%88%92•••%e2%80%93••5%E2%80%8B678",
        ),
        ("%E2%80%AA%2B34%E2%81%A0612345678%E2%80%AC", "%E2%80%AA%2B••%E2%81%A0•••••5678%E2%80%AC"),
        ("+34\u2011612\u2011345\u2011678", "+••\u2011•••\u2011••5\u2011678"),
        ("+34\u202a612\u200e345\ufeff678", "+••\u202a•••\u200e••5\ufeff678"),
        # without the +, written with separators (a client that forgot it, a national number)
        ("DELETE /dnc/1-415-555-0199 HTTP/1.1", "DELETE /dnc/•-•••-•••-0199 HTTP/1.1"),
        ("/dnc/1%20415%20555%200199", "/dnc/•%20•••%20•••%200199"),
        ("/calls?phone_number=(415)%20555-0199", "/calls?phone_number=(•••)%20•••-0199"),
        ("/dnc/612-345-678", "/dnc/•••-••5-678"),
        ("/dnc?after=%201-415-555-0199", "/dnc?after=%20•-•••-•••-0199"),
        ("/dnc?after=%2014155550199", "/dnc?after=%20•••••••0199"),  # the escape kept
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
        '"GET /healthz HTTP/1.1" 200 24601 1234',  # a log line's fields
        "2026-12-07",
    ],
)
def test_other_numbers_are_left_alone(text: str) -> None:
    assert mask_digits(text) == text


def test_redact_keeps_call_ids_whole_and_masks_numbers_around_them() -> None:
    """A call id may hold a run of 7+ digits (`call-0e79890193b5`: 8): masked as a number, it
    named no call in the agent's log lines quoting the server's errors."""
    from common.masking import redact

    text = "call call-0e79890193b5 already holds 2,000 turns; dial +14155550123 call-0123456789ab"
    assert redact(text) == (
        "call call-0e79890193b5 already holds 2,000 turns; dial +•••••••0123 call-0123456789ab"
    )
    # Not a call id (its 13th character): its digits are masked as any others.
    assert redact("call-0e79890193b5x 14155550123") == "call-0e••••0193b5x •••••••0123"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("trunk not found", "trunk not found"),
        ("auth Bearer abc.def failed", "auth [token] failed"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln expired", "token [token] expired"),
        ("bad\x00line\r\nbreak\ud800", "bad line break\ufffd"),
        ("call call-0e79890193b5 to +14155550123", "call call-0e79890193b5 to +•••••••0123"),
        ("x" * 400, "x" * 299 + "…"),
    ],
)
def test_remote_text(text: str, kept: str) -> None:
    """Another service's words, as the call's reason, the API's answer and the log keep them."""
    from common.masking import remote_text

    assert remote_text(text) == kept


def _separators() -> list[str]:
    """Every character the number normaliser takes between a number's digits (common/calls/
    phone.py's SEPARATOR): all are in the BMP."""
    return [
        chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF and _SEPARATORS.match(chr(c))
    ]


def test_a_number_written_with_any_separator_the_server_takes_is_masked_escaped_too() -> None:
    """'DELETE /dnc/%2B34%E2%81%9F612%E2%81%9F345%E2%81%9F678' (a medium mathematical space;
    a line break, a line separator, U+0085 or U+1680 alike) is a number the server takes
    (any Unicode space is a separator), and the access log had it whole: the escapes the
    masking knew were listed by hand, and these were left out."""
    unmasked = []
    for sep in _separators():
        escaped = quote(f"+34{sep}612{sep}345{sep}678", safe="")
        if "612" in mask_digits(f"DELETE /dnc/{escaped} HTTP/1.1"):
            unmasked.append(escaped)
    assert unmasked == []
