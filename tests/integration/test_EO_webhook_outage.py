"""Customer webhooks after a database outage: what came due meanwhile goes once it is back."""

from __future__ import annotations

from typing import Any

import pytest

from common.notify import deliveries
from common.storage.base import DatabaseError
from handlers.keys import STORE
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, wait_for
from tests.integration.test_customer_webhooks import (
    Receiver,
    place,
    settle,
    start_receiver,
    webhook_app,
)
from tests.processes import free_port


async def test_a_delivery_due_during_a_database_blink_goes_once_it_is_back(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender's look for due deliveries met the database down (a PostgreSQL restart):
    it then slept IDLE_WAKE_S, and a delivery due meanwhile (here a redeliver; as well a
    retry, or a dead server's claim run out) went 30 s after the database was back."""
    monkeypatch.setattr(deliveries, "DATABASE_RETRY_S", 0.05, raising=False)
    monkeypatch.setattr(deliveries, "IDLE_WAKE_S", 3600.0)  # only the database's answer counts
    receiver = Receiver(free_port())
    runner = await start_receiver(receiver)
    try:
        await _redeliver_across_a_blink(start_app, receiver, monkeypatch)
    finally:
        await runner.cleanup()


async def _redeliver_across_a_blink(
    start_app: AppFactory, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await webhook_app(start_app, receiver.url)
    call_id = await place(client, SEED_EXAMPLES[0])
    await settle(client)
    store = client.app[STORE]
    down = {"claim_due_deliveries": 1, "next_delivery_at": 1}  # one look each, then back

    def blinking(name: str) -> Any:
        real = getattr(store, name)

        async def method(*args: Any, **kwargs: Any) -> Any:
            if down[name]:
                down[name] -= 1
                raise DatabaseError("database unreachable (ConnectionRefusedError)")
            return await real(*args, **kwargs)

        return method

    for name in down:
        monkeypatch.setattr(store, name, blinking(name))
    first = (await (await client.get(f"/calls/{call_id}/deliveries")).json())["deliveries"][0]
    sent = len(receiver.got)
    assert (await client.post(f"/deliveries/{first['id']}/redeliver")).status == 202

    async def sent_again() -> bool:
        return len(receiver.got) > sent

    await wait_for(sent_again, timeout=10)
    assert down == {"claim_due_deliveries": 0, "next_delivery_at": 0}  # it met the outage
    assert receiver.got[-1].webhook_id == first["webhook_id"]
