"""A bidi control a client sends (in a Referer, a User-Agent: the access log writes them as
sent) is written escaped, in text and in JSON logs: raw, U+202E reordered what the rest of the
line showed (`"http://a/\u202eb 002" "-"` read as `"-" "200 b`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.settings import Settings, configure_logging
from tests.conftest import AppFactory

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


async def _request_logged_as(client: TestClient[Any, Any], log_format: str) -> None:
    """One request whose Referer and User-Agent hold every bidi control, logged in
    `log_format` (to stderr)."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(Settings(), log_format=log_format))
    try:
        headers = {"Referer": f"http://a/{BIDI}b 002", "User-Agent": f"agent\u202e{BIDI}"}
        resp = await client.get("/no-such-route", headers=headers)
        assert resp.status == 404
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_bidi_controls_a_client_sent_are_logged_escaped(
    start_app: AppFactory, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    client = await start_app()
    capsys.readouterr()
    await _request_logged_as(client, log_format)
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if "/no-such-route" in line]
    assert not any(ch in line for ch in BIDI), ascii(line)
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in BIDI)
    assert escaped in line, line
    if log_format == "json":  # the escapes are JSON's: the message reads back as it was
        assert f"http://a/{BIDI}b 002" in json.loads(line)["msg"]
