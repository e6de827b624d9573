"""On the embedded sandbox, its own successful webhooks and reports are left out of the access
log; a client that sends the sandbox's User-Agent is not. By the User-Agent alone, `curl -A
LiveKit-Sandbox` placed calls, listed them and added numbers to the do-not-call list with no
access line at all."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server import SANDBOX
from tests.conftest import AppFactory

SANDBOX_AGENT = {"User-Agent": "LiveKit-Sandbox"}


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_api_requests_in_the_sandboxs_name_are_logged(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, level: int
) -> None:
    caplog.set_level(level, logger="aiohttp.access")
    client: TestClient[Any, Any] = await start_app()
    placed = await client.post(
        "/calls/outbound", json={"phone_number": "+14155557705"}, headers=SANDBOX_AGENT
    )
    assert placed.status == 200
    listed = await client.get("/calls", headers=SANDBOX_AGENT)
    added = await client.post("/dnc", json={"numbers": ["+14155550199"]}, headers=SANDBOX_AGENT)
    assert (listed.status, added.status) == (200, 200)
    await client.app[SANDBOX].wait_idle(10)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    for request in ("POST /calls/outbound", "GET /calls ", "POST /dnc "):
        assert any(request in line for line in lines), (request, lines)
    # The sandbox's own successful posts are still left out, at DEBUG too.
    assert client.app[SANDBOX].webhooks_delivered >= 5
    assert not any("/webhooks/livekit" in line or "/agent/reports" in line for line in lines)
