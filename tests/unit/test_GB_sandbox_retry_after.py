"""The sandbox's webhooks wait a 503's `Retry-After` between attempts, as LiveKit does.

LiveKit's webhook notifier (livekit/protocol webhook/resource_url_notifier.go) posts through
go-retryablehttp, whose `DefaultBackoff` (v0.7.8) waits a 429's or 503's `Retry-After`
instead of its own 1 s doubling: five attempts 2 s apart, not 1, 2, 4 and 8 s, for the
server's `Retry-After: 2`. The sandbox doubled its pause whatever the answer said, so every
test of a database outage saw webhooks retried over 15 s that LiveKit gave up after 8."""

from __future__ import annotations

import asyncio

from aiohttp import web
from livekit.protocol.webhook import WebhookEvent

from common.settings import DEV_API_KEY, DEV_API_SECRET
from sandbox.webhooks import WebhookSender
from tests.helpers import serving

SCALE = 0.1  # a second of LiveKit's is 0.1 s here


async def _attempts(headers: dict[str, str]) -> list[float]:
    """When each attempt of one webhook came, its first four answered 503 with `headers`."""
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(loop.time())
        await request.read()
        return web.Response(status=503 if len(seen) < 5 else 200, headers=headers)

    async with serving(answer) as base:
        sender = WebhookSender(
            url=f"{base}/hook", api_key=DEV_API_KEY, api_secret=DEV_API_SECRET, time_scale=SCALE
        )
        await sender.start()
        try:
            sender.send("RM_1", WebhookEvent(event="room_started", id="EV_1"))
            async with asyncio.timeout(10):
                while sender.pending():
                    await asyncio.sleep(0.01)
        finally:
            await sender.close()
    assert len(seen) == 5
    return [round(b - a, 2) for a, b in zip(seen, seen[1:], strict=False)]


async def test_a_503s_retry_after_is_the_pause() -> None:
    gaps = await _attempts({"Retry-After": "3"})
    assert all(0.27 <= gap <= 0.6 for gap in gaps), gaps  # 3 s each (scaled), not doubling


async def test_without_one_the_pause_doubles_from_a_second() -> None:
    gaps = await _attempts({})
    wanted = (0.1, 0.2, 0.4, 0.8)
    assert all(want * 0.9 <= gap < want + 0.2 for gap, want in zip(gaps, wanted, strict=True)), gaps
