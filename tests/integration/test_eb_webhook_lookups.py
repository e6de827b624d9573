"""Customer webhook host names whose DNS hangs hold up no other name's lookup: not a healthy
receiver's deliveries, not another client's `webhook_url` check (on 4 lookup threads shared
by all, 6 such names held a healthy receiver's first event 7.7 s, and a campaign's bad names
answered other clients' checks "not resolved within 3 s").

DNS is `socket.getaddrinfo` monkeypatched: names ending in `.hang.test` answer 127.0.0.1
once (`.never.test`: never) and then block until the test ends, as a name server that
stopped answering does for the resolver's whole timeout. Nothing leaves this machine."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from common.calls import service as call_service
from common.notify import guard
from common.notify.lookups import NameLookups
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving_posts
from tests.integration.test_customer_webhooks import place, wait_until, webhook_app
from tests.processes import free_port

OLD_THREADS = 4  # what every webhook lookup shared, and every placement check


class HangingDns:
    """getaddrinfo with names that stop answering; `blocked` counts lookups held now."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.asked: Counter[str] = Counter()
        self.blocked = 0
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(host)
        with self._lock:
            self.asked[name] += 1
            hangs = name.endswith(".never.test") or (
                name.endswith(".hang.test") and self.asked[name] > 1
            )
            self.blocked += hangs
        if hangs:
            try:
                self.released.wait(60)  # the name server that stopped answering
            finally:
                with self._lock:
                    self.blocked -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if name.endswith(".test"):
            host = "127.0.0.1"
        return self._real(host, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingDns]:
    hanging = HangingDns()
    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    # Pools of their own: the names these tests make slow stay slow for 10 minutes in the
    # process's pools, and must not refuse a later test's lookups in the same worker.
    monkeypatch.setattr(guard, "_DNS", NameLookups("test-webhook-dns"))
    monkeypatch.setattr(call_service, "CHECK_DNS", NameLookups("test-webhook-check-dns"))
    try:
        yield hanging
    finally:
        hanging.released.set()


async def test_names_whose_dns_stopped_answering_hold_up_no_other_receiver(
    start_app: AppFactory, dns: HangingDns
) -> None:
    """24 calls whose webhook names resolved when placed and then hang (more than the threads
    names slow lately may hold, far fewer than the connections the senders use), then one to
    a healthy name: its events arrive while every other lookup is still held (before, the
    healthy lookup queued behind the first 4 hanging ones: nothing until they ended)."""
    got: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        got.append((await request.json())["data"]["call_id"])
        return web.Response(status=204)

    port = free_port()
    async with serving_posts("/hooks", receive, port):
        client = await webhook_app(
            start_app, None, calls_rate_limit_per_min=1000, calls_max_active=100
        )
        hanging = 24  # fewer than the 40 send slots of receivers not yet proven prompt
        for n in range(hanging):
            url = f"http://r{n}.hang.test:{port}/hooks"
            await place(client, dict(SEED_EXAMPLES[0], webhook_url=url))
        await wait_until(lambda: dns.blocked >= OLD_THREADS, timeout=20)
        healthy = await place(
            client, dict(SEED_EXAMPLES[1], webhook_url=f"http://ok.test:{port}/hooks")
        )
        # The hanging lookups block until the test ends (60 s): a bound the old code misses.
        await wait_until(lambda: healthy in got, timeout=20)
        await wait_until(lambda: dns.blocked == hanging, timeout=20)  # each name, one lookup
        assert not any(n.endswith(".hang.test") for n in got)
        assert all(dns.asked[f"r{n}.hang.test"] == 2 for n in range(hanging))


async def test_a_campaigns_names_that_never_answer_hold_up_no_other_clients_check(
    start_app: AppFactory, dns: HangingDns
) -> None:
    """A campaign whose rows name 24 hosts that never resolve (each check gives up after 3 s,
    its lookup thread held on): another client's call with a healthy webhook_url is placed,
    where it was refused "ok.test was not resolved within 3 s; retry later"."""
    client = await webhook_app(start_app, None, calls_rate_limit_per_min=1000)
    recipients = [
        {"phone_number": f"+1415555{7700 + n:04d}", "webhook_url": f"http://h{n}.never.test/x"}
        for n in range(24)
    ]
    campaign = asyncio.ensure_future(
        client.post("/campaigns", json={"name": "bad hosts", "recipients": recipients})
    )
    try:
        await wait_until(lambda: dns.blocked >= OLD_THREADS, timeout=20)
        body = dict(SEED_EXAMPLES[1], webhook_url="http://ok.test:8080/hooks")
        resp = await asyncio.wait_for(client.post("/calls/outbound", json=body), 20)
        assert resp.status == 200, await resp.text()
        refused = await asyncio.wait_for(campaign, 60)
        details = (await refused.json())["details"]
        assert refused.status == 422 and len(details) == 24, details
        assert "was not resolved within 3 s; retry later" in details[0]["error"]
    finally:
        if not campaign.done():
            campaign.cancel()
