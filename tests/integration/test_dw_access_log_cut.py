"""A field of the access line longer than its cut (300 characters) has its numbers masked
before the cut, not after: a number across the cut kept the digits before it, unmasked when
they were fewer than seven (`%2B141555…`) and otherwise with its middle digits shown as if
they were its last four (`%2B•••5555…`)."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.helpers import raw_answer

NUMBER = "14155550100"
PREFIX = "https://dash.example/view?"


async def test_a_number_across_the_cut_shows_no_more_than_its_last_four_digits(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client: TestClient[Any, Any] = await start_app()
    # The cut (300) falls before the number, on each of its digits, and after it.
    pads = range(300 - len(PREFIX) - len("&callee=%2B") - len(NUMBER) - 2, 300 - len(PREFIX))
    for pad in pads:
        referer = f"{PREFIX}{'x' * pad}&callee=%2B{NUMBER}&tail={'y' * 50}"
        resp = await client.get("/openapi.json", headers={"Referer": referer})
        assert resp.status == 200
    lines = [r.getMessage() for r in caplog.records if "dash.example" in r.getMessage()]
    assert len(lines) == len(pads)
    for line in lines:
        shown = re.search(r"&callee=%2B([^&…\"]*)", line)
        if shown is None:  # cut before the number
            continue
        digits = "".join(ch for ch in shown.group(1) if ch.isdigit())
        assert "0100".startswith(digits), line  # of its last four, at most


async def test_a_refused_requests_debug_line_shows_no_more_than_the_last_four_digits(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp's parser quotes the refused header; its line was cut at 200 characters before
    it was masked (`+141555`, `+•••5555`)."""
    client: TestClient[Any, Any] = await start_app()
    caplog.set_level(logging.DEBUG)
    for pad in range(140, 175):  # the cut falls before the number, in it, after it
        header = b"X-A: " + b"y" * pad + b"+14155550100\x01"  # \x01: no header value holds it
        raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
        answer = await raw_answer(client, raw)
        assert answer.split()[1] == b"400", answer[:100]
    lines = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(lines) == 35
    for line in lines:
        shown = line.rpartition("y")[2]  # what follows the padding: the number, or some of it
        digits = "".join(ch for ch in shown.partition("\\")[0] if ch.isdigit())
        assert "0100".startswith(digits), line
