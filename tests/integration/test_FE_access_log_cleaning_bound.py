"""An access line's fields are cut at 300 characters, but each was cleaned of credentials
whole first: an 8 KB Referer, User-Agent and request line of `=&` (4,000 empty query
parameters each, every one looked at) cost the server's loop 23 ms a request, on any route,
with no token (44 such requests a second held /healthz at 0.3 s), and a malformed request
quoting 8 KB of them 8 ms, though its line is written at DEBUG only. Only what can be shown
is cleaned now; what is shown is hidden and masked as before."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from handlers import access_log
from handlers.access_log import HIDDEN, MAX_FIELD_CHARS
from tests.conftest import AppFactory
from tests.helpers import raw_answer

TOKEN = "tok_" + "k" * 40
PAD = ("=&" * 4000)[:7900]  # as long as a header may be
QUERY = "&".join(f"{i:x}=" for i in range(1500))  # each name once: a repeated one is a 400


@pytest.fixture
def cleaned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each text hide_credentials is given."""
    lengths: list[int] = []
    hide = access_log.hide_credentials

    def spied(text: str) -> str:
        lengths.append(len(text))
        return hide(text)

    monkeypatch.setattr(access_log, "hide_credentials", spied)
    return lengths


async def test_only_what_a_field_shows_is_cleaned(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, cleaned: list[int]
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await start_app(calls_api_token=TOKEN)
    referer = f"https://crm.example/?access_token=s3cr3t-{'x' * 2000}&{PAD[:5000]}"
    agent = f"crm {TOKEN} {PAD}"
    headers = {"Referer": referer, "User-Agent": agent}
    resp = await client.get(f"/openapi.json?{QUERY}", headers=headers)
    assert resp.status == 200, await resp.text()
    (line,) = [r.getMessage() for r in caplog.records if "/openapi.json" in r.getMessage()]
    assert max(cleaned) <= access_log._read_for(MAX_FIELD_CHARS), cleaned  # not 8,000
    # What is shown is as before: the credential's value and the token hidden, cut, counted.
    assert f"access_token={HIDDEN}" in line and "s3cr3t" not in line
    assert f"crm {HIDDEN} =&" in line and TOKEN not in line
    assert f"… ({len(agent) - MAX_FIELD_CHARS} more characters)" in line
    assert f"({len(referer) - MAX_FIELD_CHARS} more characters)" in line


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_a_malformed_requests_reason_is_cleaned_only_if_written(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, cleaned: list[int], level: int
) -> None:
    client = await start_app()
    caplog.set_level(level)
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + PAD.encode() + b"\x01\r\n\r\n"
    answer = await raw_answer(client, raw)
    assert answer.split()[1] == b"400", answer[:200]
    refused = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    if level == logging.INFO:
        assert cleaned == [] and refused == []
        return
    assert cleaned and max(cleaned) <= access_log._read_for(access_log.MALFORMED_REASON_CHARS)
    (said,) = refused
    assert "Invalid header value char" in said and len(said) < 400, said


def test_a_field_no_longer_than_what_is_read_is_shown_as_before() -> None:
    access_log._set_secrets([TOKEN])
    try:
        text: Any = f"/calls?key=abc&n=+14155550123&{TOKEN}&" + "a" * 900
        assert access_log._shown_field(text) == access_log._clipped(
            access_log.hide_credentials(text), MAX_FIELD_CHARS
        )
    finally:
        access_log._set_secrets([])
