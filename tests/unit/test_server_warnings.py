"""Start-up warnings that save a 3 a.m. search: where the agents' reports will go."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from common.settings import Settings
from server import warn_report_url

REAL: dict[str, Any] = {"livekit_url": "wss://example.livekit.cloud", "port": 8123}


def test_a_real_livekit_without_public_base_url_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **REAL))
    assert "PUBLIC_BASE_URL is not set" in caplog.text
    assert "http://127.0.0.1:8123/agent/reports" in caplog.text


@pytest.mark.parametrize(
    "overrides",
    [{}, {**REAL, "public_base_url": "https://calls.example.com"}],
    ids=["sandbox", "public-base-url-set"],
)
def test_no_warning_when_the_address_is_known_or_local(
    caplog: pytest.LogCaptureFixture, overrides: dict[str, Any]
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_report_url(dataclasses.replace(Settings(), **overrides))
    assert caplog.text == ""
