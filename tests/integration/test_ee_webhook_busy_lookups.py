"""A delivery whose host name was not looked up (slow lately, while the threads slow names
may hold are held: `LookupsBusy`) says so in its `last_error`. It said "the URL's host name
did not resolve (DNS)": its owner checked their DNS, found the name resolving, and had
nothing to fix but a slow name server.

DNS is `socket.getaddrinfo` monkeypatched (names ending `.test` are 127.0.0.1); the delivery
pool's clock steps 2 s a reading, so each finished lookup took longer than SLOW_S; one
hanging name holds the one lane slow names get. Nothing leaves this machine."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from common.notify import guard
from common.notify.lookups import NameLookups
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_customer_webhooks import place, wait_until, webhook_app


class SteppingClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 2.0
        return self.now


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """`hang-*.test` names block until the test ends; other `.test` names are 127.0.0.1."""
    real = socket.getaddrinfo
    done = threading.Event()

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(host)
        if name.startswith("hang-"):
            done.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real("127.0.0.1" if name.endswith(".test") else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    try:
        yield done
    finally:
        done.set()


async def test_a_delivery_to_a_name_not_looked_up_says_so_not_that_it_did_not_resolve(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, released: threading.Event
) -> None:
    names = NameLookups("test-ee-busy", lanes=4, slow_lanes=1, clock=SteppingClock())
    monkeypatch.setattr(guard, "_DNS", names)
    await names.getaddrinfo("slow-x.test", socket.AF_INET)  # took "2 s": known slow now
    hanging = asyncio.ensure_future(names.getaddrinfo("hang-y.test", socket.AF_INET))
    try:
        await wait_until(lambda: "hang-y.test" in NameLookups.names_held(), timeout=10)
        client = await webhook_app(start_app, None)
        call_id = await place(
            client, dict(SEED_EXAMPLES[0], webhook_url="http://slow-x.test:9/hooks")
        )
        errors: list[str | None] = []

        async def tried() -> bool:
            resp = await client.get(f"/calls/{call_id}/deliveries")
            listed = (await resp.json())["deliveries"]
            errors[:] = [d["last_error"] for d in listed if d["attempts"]]
            return bool(errors)

        async with asyncio.timeout(10):
            while not await tried():
                await asyncio.sleep(0.05)
        assert errors[0] == (
            "connection failed: the URL's host name was slow to resolve lately and was not"
            " looked up this time (is its name server answering promptly?)"
        )
    finally:
        released.set()
        with pytest.raises(OSError):
            await hanging
