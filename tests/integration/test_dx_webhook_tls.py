"""A customer's receiver whose TLS fails (an https:// URL to a port that speaks plain HTTP, a
certificate expired or self-signed): each delivery's `last_error`, which the customer reads
in GET /calls/{call_id}/deliveries, said "connection failed (ClientConnectorSSLError)", the
exception's class alone, as for a receiver that was down. It says the TLS failed, and why."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import place, settle, webhook_app


async def _ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_a_receiver_whose_tls_fails_is_told_why(start_app: AppFactory) -> None:
    async with serving(_ok) as plain:
        url = plain.replace("http://", "https://") + "/hooks"  # no TLS on that port
        client = await webhook_app(start_app, url)
        call_id = await place(client, SEED_EXAMPLES[0])
        await settle(client)
    listed: list[dict[str, Any]] = (
        await (await client.get(f"/calls/{call_id}/deliveries")).json()
    )["deliveries"]
    assert listed and all(d["state"] == "failed" for d in listed), listed
    error = listed[0]["last_error"]
    # OpenSSL's reason, in words ("wrong version number" here), and what to check
    assert re.fullmatch(
        r"connection failed: TLS handshake failed \([a-z ]+\): does the URL's port serve https\?",
        error,
    ), error
    assert "SSLError" not in error, error
