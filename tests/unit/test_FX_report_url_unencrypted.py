"""PUBLIC_BASE_URL of plain http to another host, with a real LiveKit, is a start-up WARNING,
as LIVEKIT_URL's ws:// is: every agent report (each call's transcript, summary and extracted
fields) and the token signing it go unencrypted. The real server with
PUBLIC_BASE_URL=http://calls.example.com and LIVEKIT_URL=wss://... started saying nothing of it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from common.settings import Settings
from server import warn_report_url

REAL: dict[str, Any] = {"livekit_url": "wss://example.livekit.cloud", "port": 8123}


@pytest.mark.parametrize(
    "url", ["http://calls.example.com", "http://10.0.0.5:8000/base", "HTTP://calls.example.com."]
)
def test_reports_over_plain_http_to_another_host_are_warned_of(
    caplog: pytest.LogCaptureFixture, url: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **REAL, public_base_url=url))
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("PUBLIC_BASE_URL is http:// to ")
    assert "transcript, summary and extracted fields" in said
    assert "go unencrypted" in said


@pytest.mark.parametrize(
    ("overrides", "url"),
    [
        (REAL, "https://calls.example.com"),
        (REAL, "http://127.0.0.1:8123"),
        (REAL, "http://localhost:8123"),
        (REAL, "http://[::1]:8123"),
        ({}, "http://calls.example.com"),  # the sandbox: its agent posts from this process
    ],
)
def test_https_loopback_or_the_sandbox_are_not_warned_of(
    caplog: pytest.LogCaptureFixture, overrides: dict[str, Any], url: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **overrides, public_base_url=url))
    assert "unencrypted" not in caplog.text
