"""A 404 that is not the calls server's own answer is retried, not refused for good.

The calls server answers 404 with its JSON error (`{"status": "error", "error": "unknown
call"}`) for a call it does not know: sending that report again will not help. A reverse
proxy in front of it answers 404 with a page of its own while the server is away: Traefik's
`404 page not found` (text/plain) while a deploy or a restart replaces the server's container.
Each report posted in those seconds (the answer, turns, the final report) was refused for good,
one WARNING each, and lost; a spool pass removed the file it sent then. Now such a 404 is
retried like a 5xx, and the reports arrive once the server is back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from agent.reporting import RetryPolicy
from agent.spool import ReportSpool, resend
from common.contracts import REPORTS_PATH, AgentReport, TranscriptTurn
from tests.unit.test_agent_reporting import (
    CALL,
    KEY,
    SECRET,
    ReportServer,
    final_report,
    make_sender,
    within,
)

TRAEFIK_404 = "404 page not found\n"


class BehindAProxy:
    """The report server behind a proxy that answers its own 404 for the first `away` POSTs
    (the server's container being replaced)."""

    def __init__(self) -> None:
        self.state = ReportServer()
        self.away = 0
        self.proxied_404s = 0

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        if self.away > 0:
            self.away -= 1
            self.proxied_404s += 1
            return web.Response(status=404, text=TRAEFIK_404, content_type="text/plain")
        return await self.state.handle(request)


@pytest.fixture
async def proxy(aiohttp_server: AiohttpServer) -> AsyncIterator[BehindAProxy]:
    fake = BehindAProxy()
    app = web.Application()
    app.router.add_post(REPORTS_PATH, fake.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    fake.state.url = str(server.make_url(REPORTS_PATH))
    yield fake


async def test_a_proxys_404_is_retried_until_the_server_is_back(
    proxy: BehindAProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.reporting")
    proxy.away = 3
    sender = make_sender(proxy.state.url, linger_s=0)
    sender.answered(1_700_000_000.0)
    sender.turn(TranscriptTurn(role="callee", text="Hello?", at_s=0.4))
    sender.final(final_report())
    assert await within(sender.flush(10))
    await sender.aclose()

    assert proxy.proxied_404s == 3
    assert sender.refused == [] and sender.dropped == []
    assert sorted(sender.delivered) == [0, 1, 2]
    assert [r.kind for r in proxy.state.reports] == ["answered", "turn", "final"]
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert any("not the calls server's answer" in line for line in said)
    assert not any("refused by the server" in line for line in said)


async def test_the_servers_own_404_is_still_refused_for_good(proxy: BehindAProxy) -> None:
    proxy.state.script = {0: [404]}  # its JSON error: a call it does not know
    sender = make_sender(proxy.state.url, linger_s=0)
    sender.answered(1_700_000_000.0)
    assert await within(sender.flush(10))
    await sender.aclose()

    assert [status for _, _, status in proxy.state.seen] == [404]
    assert sender.refused == [0]


async def test_a_spooled_file_answered_a_proxys_404_is_kept_for_the_next_pass(
    proxy: BehindAProxy, tmp_path: Path
) -> None:
    spool = ReportSpool(tmp_path / "spool")
    report = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_700_000_000.0)
    assert spool.save(proxy.state.url, CALL, [report.to_json()]) is not None
    quick = RetryPolicy(first_delay_s=0.05, max_delay_s=0.05, attempt_timeout_s=2, deadline_s=0.3)
    proxy.away = 1_000  # the whole pass

    assert await resend(spool, KEY, SECRET, retry=quick, timeout_s=5) == 0
    assert proxy.proxied_404s >= 1
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1  # kept, not removed

    proxy.away = 0  # back
    assert await resend(spool, KEY, SECRET, retry=quick, timeout_s=5) == 1
    assert [json.loads(r.to_json())["kind"] for r in proxy.state.reports] == ["answered"]
    assert list((tmp_path / "spool").glob("*.json")) == []
