"""A room deletion LiveKit refused over its limit (429), waiting to be asked again (388912e:
after 1, 2, 4, 8 and 15 s), when the server stops (SIGTERM).

The room is one whose phone may ring (a dial answered 504). The stop waited its whole budget
for room deletions (ROOM_CLOSE_WAIT_S, 5 s) while the deletion slept out its pause, then
cancelled it unasked and said "LiveKit not answering within 5 s": the room left, the phone
ringing, a LiveKit that now had room never asked. A stop asks such a deletion again at once.

And a room's deletion under way is not begun again beside it: each webhook of a room alive
for a call that is over (and the line's end, and the agent's leaving) asked for it, each a
deletion of its own asked again five times into the same limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiohttp import web

from common.calls import service as calls_service
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving
from tests.reliability.test_HN_room_close_over_limit import (
    CALL,
    OVER_LIMIT,
    late_dial_deletion_over_limit_twice,
)


async def _until(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not within the time given"
        await asyncio.sleep(0.02)


async def test_a_stop_asks_a_waiting_room_deletion_again_at_once(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(calls_service, "CLOSE_ROOM_RETRY_S", (0.1, 60.0))
    # A stop's budget for room deletions of 30 s here (5 s in production): a stop that waited
    # out the pause took all of it; one that asks at once is told apart on a loaded machine.
    monkeypatch.setattr(calls_service, "ROOM_CLOSE_WAIT_S", 30.0)
    deletions: list[int] = []

    async with serving(late_dial_deletion_over_limit_twice(deletions)) as url:
        client = await app_on_livekit(start_app, url)
        placed = await client.post("/calls/outbound", json=CALL)
        assert placed.status == 504, await placed.text()  # may have rung: its room deleted
        await _until(lambda: len(deletions) == 2, 10)  # now in its 60 s pause
        started = time.monotonic()
        await client.close()  # the server stops: its cleanup, as at SIGTERM
        stopped_s = time.monotonic() - started

    assert deletions == [429, 429, 200]  # was [429, 429]: the room left, its phone ringing
    assert stopped_s < 15.0, stopped_s  # was 30.0: the whole budget, waiting out the pause
    assert "room deletion(s) unfinished" not in caplog.text


async def test_a_rooms_deletion_under_way_is_not_begun_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its first try again 0.8 s on: looked at 0.15 s after the four were asked, the first
    # deletion had not come yet on a loaded machine, or its try again 0.3 s on had.
    monkeypatch.setattr(calls_service, "CLOSE_ROOM_RETRY_S", (0.8, 0.2, 0.2))
    deletions: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "DeleteRoom":
            deletions.append(method)
            return web.Response(status=429, text=OVER_LIMIT, content_type="application/json")
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        service = client.app[CALLS]
        for _ in range(4):  # four webhooks of one room alive for a call that is over
            service._close_room_soon("call-0123456789ab")
        await _until(lambda: bool(deletions), 5)
        await asyncio.sleep(0.15)  # the others, were they begun beside it
        assert len(deletions) == 1  # was 4: one deletion each
        await _until(lambda: len(deletions) == 4, 5)  # its own three tries again
        await asyncio.sleep(0.5)
    assert len(deletions) == 4  # was 16
