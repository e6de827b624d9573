"""A campaign whose webhook host answers a non-public address for a moment, as its attempts are
placed (a record being moved, a parked domain), is not ended for it.

Every attempt checks its webhook_url's host again as it is placed. A host that did not resolve
then waited and was tried again; one that resolved to a private address made its recipient
`invalid` for good, nobody called, and with the campaign's `defaults.webhook_url` every
recipient placed while DNS answered so. It now waits as an unresolved one does.
"""

from __future__ import annotations

import socket
import threading
from collections import Counter
from typing import Any

import pytest

from common.campaigns import scheduler
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import all_recipients, create, us, wait_status

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLIC = "93.184.216.34"
PRIVATE = "10.20.30.40"


async def test_a_webhook_host_answering_a_private_address_at_dial_time_is_tried_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "UNRESOLVED_RETRY_S", 0.05)
    monkeypatch.setattr(scheduler, "MAX_UNRESOLVED_TRIES", 3)
    checks: Counter[str] = Counter()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".dns.test"):
            if threading.current_thread().name.startswith("webhook-dns"):
                host = "127.0.0.1"  # the sends: refused at connect, nothing leaves the machine
            else:  # the checks: public when the campaign is made; then moving, or moved
                checks[host] += 1
                moving = host.startswith("moved.") or checks[host] in (2, 3)
                host = PRIVATE if checks[host] > 1 and moving else PUBLIC
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = await start_app(
        sandbox_time_scale=0.0,
        campaign_clock=ShiftedClock(OPEN_EVERYWHERE),
        calls_webhook_secret=SECRET,
        calls_rate_limit_per_min=100_000,
        calls_max_active=100_000,
    )
    created = await create(
        client,
        {
            "name": "moving",
            "recipients": [
                {"phone_number": us(1, "7700"), "webhook_url": "https://moving.dns.test/x"},
                {"phone_number": us(2, "7700"), "webhook_url": "https://moved.dns.test/x"},
            ],
        },
    )
    campaign = await wait_status(client, created["campaign_id"], "completed", timeout=30)
    assert campaign["counts"]["completed"] == 1 and campaign["counts"]["invalid"] == 1
    moving, moved = await all_recipients(client, created["campaign_id"])
    assert moving["state"] == "completed" and checks["moving.dns.test"] >= 4
    assert moved["state"] == "invalid"
    (error,) = moved["errors"]
    assert error["field"] == "webhook_url", error
    assert "non-public address" in error["error"] and "3 tries" in error["error"], error
    dials = Counter(d.number for d in client.app[SANDBOX].dials)
    assert dials[us(1, "7700")] == 1 and dials[us(2, "7700")] == 0


async def test_a_single_calls_webhook_host_answering_a_private_address_is_still_a_422(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real(PRIVATE if host == "hooks.dns.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = await start_app(calls_webhook_secret=SECRET)
    body = {"phone_number": us(3, "7700"), "webhook_url": "https://hooks.dns.test/x"}
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 422
    assert (await resp.json())["details"] == [
        {"field": "webhook_url", "error": "hooks.dns.test resolves to a non-public address"}
    ]
