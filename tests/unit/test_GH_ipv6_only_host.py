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


def test_the_agent_s_health_server_on_the_ipv6_wildcard_is_said_too() -> None:
    """The agent worker's health/status server (livekit-agents', an aiohttp site) binds `::`
    the same way: a container's IPv4 liveness check failed, and the worker was restarted."""
    from agent.cli import start_warnings

    # (check_spool=False: the default spool is ./agent-reports, made by the check, and this
    # test runs in the checkout)
    said = [
        w
        for w in start_warnings(Settings(agent_http_host="::"), check_spool=False)
        if "IPv6 only" in w
    ]
    assert said == [
        "AGENT_HTTP_HOST=:: listens on IPv6 only: IPv4 clients (a load balancer's or"
        " Kubernetes' health checks to an IPv4 address among them) cannot connect;"
        " AGENT_HTTP_HOST=0.0.0.0 listens on IPv4"
    ]
    other = Settings(agent_http_host="0.0.0.0")  # noqa: S104
    assert not [w for w in start_warnings(other, check_spool=False) if "IPv6" in w]
