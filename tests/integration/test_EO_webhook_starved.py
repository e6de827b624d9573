"""Customer webhooks with every send slot taken: what is due waits for a slot, unpolled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from common.notify import deliveries
from handlers.keys import STORE, WEBHOOKS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import place, settle, wait_until, webhook_app


async def test_deliveries_due_with_no_slot_free_wait_for_one_without_polling(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every slot busy (a backlog behind slow receivers) and more deliveries due: the sender
    asked the database when the next came due, was told "now", found no slot, and asked
    again UNCLAIMABLE_WAIT_S later, 20 times a second (two queries each) until a send ended.
    It waits for a send to end instead, and then sends every one."""
    monkeypatch.setattr(deliveries, "MAX_CONCURRENCY", 2)
    monkeypatch.setattr(deliveries, "UNPROVEN_CONCURRENCY", 2)
    monkeypatch.setattr(deliveries, "PER_RECEIVER_WAITING", 0)  # given back: due, in the db
    answer = asyncio.Event()
    got: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        await request.read()
        await answer.wait()
        got.append(request.headers["webhook-id"])
        return web.Response(status=204)

    async with serving(slow, "/h", "POST") as url:
        client = await webhook_app(start_app, f"{url}/h")
        store, sender = client.app[STORE], client.app[WEBHOOKS]
        real_next = store.next_delivery_at
        looks = 0

        async def next_delivery_at(*args: Any, **kwargs: Any) -> Any:
            nonlocal looks
            looks += 1
            return await real_next(*args, **kwargs)

        monkeypatch.setattr(store, "next_delivery_at", next_delivery_at)
        calls = [await place(client, example) for example in SEED_EXAMPLES]
        await wait_until(lambda: len(sender._in_flight) == 2)
        await wait_until(lambda: sender._starved)  # a look found the slots taken
        looks = 0
        await asyncio.sleep(1.0)
        assert looks < 5, looks  # 19-20 before
        answer.set()
        await settle(client)
    for call_id in calls:
        listed = (await (await client.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
        assert listed and {d["state"] for d in listed} == {"delivered"}
    assert len(got) == len(set(got))
