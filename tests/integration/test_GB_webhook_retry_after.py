"""A callee's hang-up whose webhook met a database outage of 13 s (a PostgreSQL restart).

LiveKit retries a webhook 4 times, then drops it, waiting the 503's `Retry-After` between
attempts (livekit/protocol webhook/resource_url_notifier.go, through go-retryablehttp v0.7.8's
DefaultBackoff; the sandbox does so too). The server's `Retry-After: 2` made LiveKit give up
after 8 s: a busy line's participant_left was lost, and the call, told only by its
room_finished, settled no_answer ("it may have been busy or failed") after the grace. It
asks 5 s now (20 s in all, within the 30 s LiveKit keeps the room's next events queued)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from common.livekit.events import RoomEvent
from common.storage.base import DatabaseError
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_webhooks import place

Client = TestClient[Any, Any]
SCALE = 0.1  # the sandbox's (and LiveKit's retries') second is 0.1 s
OUTAGE_S = 13 * SCALE
BUSY = "+14155550486"


async def test_a_hang_up_outlasting_two_second_retries_is_taken_when_the_database_is_back(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=SCALE)
    calls = client.app[CALLS]
    handle_event = calls.handle_event
    loop = asyncio.get_running_loop()
    down_until: float | None = None
    refused: list[str] = []

    async def the_database_restarting(event: RoomEvent) -> Any:
        nonlocal down_until
        if event.event == "participant_left" and down_until is None:
            down_until = loop.time() + OUTAGE_S
        if down_until is not None and loop.time() < down_until:
            refused.append(event.event)
            raise DatabaseError("database unreachable (ConnectionRefusedError)")
        return await handle_event(event)

    calls.handle_event = the_database_restarting
    call_id = await place(client, BUSY)

    async def settled() -> bool:
        shown = await (await client.get(f"/calls/{call_id}")).json()
        return shown["status"] not in ("dialing", "ringing", "in_progress")

    await wait_for(settled, timeout=30)
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert refused[:2] == ["participant_left", "participant_left"], refused
    assert (shown["status"], shown["reason"]) == ("busy", "user_rejected")
