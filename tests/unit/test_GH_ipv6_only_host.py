"""HOST=:: listens on IPv6 alone (asyncio binds it so), where `::` means IPv4 too to most
programs on Linux: the real server.py with HOST=:: was refused on 127.0.0.1 (a load
balancer's or Kubernetes' probe to an IPv4 address: connection refused) while its log said
only `starting on http://[::]:PORT`. Start-up now says it."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from common.settings import Settings
from server import warn_ipv6_only

TOKEN = "t" * 32


@pytest.mark.parametrize("host", ["::", "0::0", "::0"])
def test_the_ipv6_wildcard_is_said_to_be_ipv6_only(
    caplog: pytest.LogCaptureFixture, host: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_ipv6_only(dataclasses.replace(Settings(), host=host, calls_api_token=TOKEN))
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"HOST={host} listens on IPv6 only: IPv4 clients"), said
    assert "HOST=0.0.0.0" in said


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "::1", "localhost", "fd00::2"])  # noqa: S104
def test_other_hosts_are_not(caplog: pytest.LogCaptureFixture, host: str) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_ipv6_only(dataclasses.replace(Settings(), host=host, calls_api_token=TOKEN))
    assert caplog.records == []
