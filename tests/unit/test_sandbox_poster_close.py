"""The sandbox's signed poster (its webhooks and agent reports) as it closes.

A delivery queued while `close` was cancelling the workers (a call's next webhook, as the
embedded sandbox stops under live calls) started a worker of its own after the ones being
cancelled were listed: it then posted through the session `close` had closed, and its
exception ('Session is closed') was never retrieved, an ERROR in the log (it failed
test_GA_release_after_cancel in a full run). Queued once closing began, it is dropped."""

from __future__ import annotations

import asyncio

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sandbox.webhooks import Delivery, Retries, SignedPoster


async def test_a_delivery_queued_while_the_poster_closes_is_dropped(
    aiohttp_server: AiohttpServer,
) -> None:
    answer = asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        await answer.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/webhooks", slow)
    server = await aiohttp_server(app)
    url = str(server.make_url("/webhooks"))
    poster = SignedPoster(
        api_key="key", api_secret="secret", retries=Retries.livekit(0.01), what="webhook"
    )
    await poster.start()
    delivery = Delivery(lambda: url, b"{}", "token", "application/webhook+json", "room_started")
    poster.enqueue("first", delivery)
    await asyncio.sleep(0.1)  # its post waits on the receiver
    closing = asyncio.create_task(poster.close())
    await asyncio.sleep(0)  # close has cancelled the first worker and waits for it to end
    poster.enqueue("second", delivery)
    await closing
    late = [t for t in asyncio.all_tasks() if t.get_name() == "webhook-second"]
    results = await asyncio.gather(*late, return_exceptions=True)
    answer.set()
    assert results == []  # no worker started for it: nothing posted through a closed session
