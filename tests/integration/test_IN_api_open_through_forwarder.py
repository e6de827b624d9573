"""Without CALLS_API_TOKEN the API is open to this machine's programs, and refuses what a
reverse proxy passes on by its headers (a proxy header, HTTP/1.0). A forwarder in front that
adds none (a TLS or TCP one: stunnel, an ssh tunnel, nginx passing `Host` on over HTTP/1.1
without X-Forwarded-For) passes the bytes as they came: through it, a client elsewhere listed
every call, numbers and all, and placed calls, and start-up said only that the API was open
to every program on this machine. Start-up asks the API through PUBLIC_BASE_URL, as it asks
the reports route, and says it at ERROR.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import server
from common.settings import Settings
from server import _say_where_reports_lead, api_reached_through, say_if_api_open_through
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.processes import free_port

SAID = "CALLS_API_TOKEN is not set, and the API answers at PUBLIC_BASE_URL"


class _ThisMachine(AbstractResolver):
    """Every name leads here: PUBLIC_BASE_URL's host, forwarded to this server byte for byte,
    as a TLS or TCP forwarder in front of it does."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


async def _forwarded(start_app: AppFactory) -> tuple[Any, str]:
    port = free_port()
    base = f"http://calls.example.com:{port}"
    client = await start_app(port=port, public_base_url=base)
    assert (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status == 200
    return client, base


async def test_the_api_open_through_public_base_url_is_said(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _client, base = await _forwarded(start_app)
    connector = aiohttp.TCPConnector(resolver=_ThisMachine())
    async with aiohttp.ClientSession(connector=connector) as session:
        # What anyone who reaches PUBLIC_BASE_URL gets, with no token: every call.
        async with session.get(f"{base}/calls") as listed:
            assert listed.status == 200
            (call,) = (await listed.json())["calls"]
            assert call["phone_number"] == SEED_EXAMPLES[0]["phone_number"]
        with caplog.at_level(logging.ERROR, logger="server"):
            await say_if_api_open_through(base, session)
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said.startswith(SAID) and "set CALLS_API_TOKEN" in said


async def test_a_forwarder_that_says_it_is_one_is_refused_and_not_said(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    _client, base = await _forwarded(start_app)
    connector = aiohttp.TCPConnector(resolver=_ThisMachine())
    headers = {"X-Forwarded-For": "203.0.113.9"}  # nginx's usual, Caddy's, Traefik's
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        async with session.get(f"{base}/calls") as listed:
            assert listed.status == 403
        with caplog.at_level(logging.ERROR, logger="server"):
            await say_if_api_open_through(base, session)
    assert SAID not in caplog.text


async def test_start_ups_check_of_public_base_url_asks_the_api_too(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Once PUBLIC_BASE_URL leads to a calls server, the API is asked there (the check of a
    server whose api_reached_through is its PUBLIC_BASE_URL; here on loopback, which this
    server itself would not ask about)."""
    client = await start_app()
    base = f"http://127.0.0.1:{client.server.port}"
    with caplog.at_level(logging.INFO, logger="server"):
        await _say_where_reports_lead(f"{base}/agent/reports", base)
    assert "which leads to a calls server" in caplog.text
    assert SAID in caplog.text


@pytest.mark.parametrize(
    ("overrides", "asked"),
    [
        ({"public_base_url": "https://calls.example.com"}, True),
        ({"public_base_url": "https://calls.example.com", "calls_api_token": "t" * 32}, False),
        ({"public_base_url": "http://127.0.0.1:8000"}, False),
        ({"public_base_url": "http://localhost:8000/voice"}, False),
        ({"public_base_url": "http://[::1]:8000"}, False),
        ({}, False),
    ],
)
def test_which_servers_ask(overrides: dict[str, Any], asked: bool) -> None:
    settings = dataclasses.replace(Settings(), **overrides)
    assert (api_reached_through(settings) is not None) == asked


async def test_the_api_is_asked_again_when_nothing_answered_it(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked once, a gateway's 502 (or a timeout) at that moment left an open API unsaid for
    good. Asked again while nothing answers, it is said."""
    monkeypatch.setattr(server, "REPORT_URL_CHECK_EVERY_S", 0.01)
    client, base = await _forwarded(start_app)
    answers = iter([502, 503])

    async def gateway_warming_up(request: web.Request) -> web.StreamResponse:
        status = next(answers, None)
        if status is not None:
            return web.Response(status=status, text="<html>Bad Gateway</html>")
        async with client.session.get(f"{client.make_url('')}{request.path_qs}") as passed:
            return web.Response(status=passed.status, body=await passed.read())

    async with serving(gateway_warming_up) as gateway, aiohttp.ClientSession() as session:
        with caplog.at_level(logging.ERROR, logger="server"):
            await say_if_api_open_through(gateway, session)
    (said,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert said.startswith(SAID), said
    assert next(answers, None) is None  # the third answer was the API's


async def test_a_page_of_another_service_there_is_not_asked_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "REPORT_URL_CHECK_EVERY_S", 0.01)
    asked = 0

    async def not_found(_request: web.Request) -> web.StreamResponse:
        nonlocal asked
        asked += 1
        return web.Response(status=404, text="<html>Not Found</html>")

    async with serving(not_found) as base, aiohttp.ClientSession() as session:
        with caplog.at_level(logging.ERROR, logger="server"):
            await say_if_api_open_through(base, session)
    assert asked == 1 and SAID not in caplog.text
