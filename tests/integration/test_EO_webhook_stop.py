"""A server stopping (a rolling deploy) gives back the customer webhooks it held."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from common.notify import deliveries
from common.storage import programs
from handlers.keys import STORE, WEBHOOKS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import Client, place, wait_until, webhook_app


async def test_a_stopping_server_gives_back_what_it_held_to_the_others(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server stopped while a receiver was slow left its sends unanswered and those waiting
    for its receiver's slot claimed for CLAIM_LEASE_S (60 s): the other servers sent none of
    them, nor anything of their calls behind them, for a minute after a rolling deploy's
    SIGTERM (its claims are given back only by a server starting under its name, and a new
    pod has a new one). It gives them back as it stops."""
    monkeypatch.setattr(deliveries, "PER_RECEIVER_CONCURRENCY", 1)
    seen: list[bytes] = []
    answer = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        seen.append(await request.read())
        await answer.wait()  # until the test ends
        return web.Response(status=204)

    async with serving(slow, "/h", "POST") as url:
        client = await webhook_app(start_app, f"{url}/h")
        store = client.app[STORE]
        calls = [await place(client, example) for example in SEED_EXAMPLES[:2]]
        held = await wait_for_held(client, len(calls))
        await client.app[WEBHOOKS].stop(timeout=0.1)
        other = programs.claim_due_deliveries(store.dialect, time.time(), 5.0, 10, "other:1@h")
        taken = await store._run(other, write=True)
        answer.set()
    assert len(seen) == 1  # one in flight; the other call's first event waited for its slot
    assert sorted(d.id for d in taken) == held  # both at once for the others to send


async def wait_for_held(client: Client, count: int) -> list[int]:
    """The ids of the deliveries the server holds, once it holds `count` (one per call)."""
    sender = client.app[WEBHOOKS]
    await wait_until(
        lambda: len(sender._in_flight) + sum(map(len, sender._waiting.values())) >= count
    )
    waiting = [d.id for queue in sender._waiting.values() for d in queue]
    return sorted([*sender._in_flight, *waiting])
