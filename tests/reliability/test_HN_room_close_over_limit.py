"""The room of a call whose dial may have rung (LiveKit, or a gateway before it, answered the
dial 504: it may have been made) is deleted, so that a phone ringing stops, and a callee who
answers does not talk to the agent of a call recorded `failed`. LiveKit over a limit of its
own (429 `resource_exhausted`, under the same load that made the dial late) answering that
deletion: it was one request, a WARNING, and the room stayed, the phone ringing. Now a
deletion LiveKit refuses for its limit is asked again a few times, over about half a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from common.calls import service as calls_service
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550129", "name": "Late", "language": "en", "emotion": "Calm"}
OVER_LIMIT = '{"code": "resource_exhausted", "msg": "rate limit exceeded"}'


def late_dial_deletion_over_limit_twice(
    deletions: list[int],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A LiveKit whose dial answers 504 (it may have rung: the call's room is deleted) and
    whose DeleteRoom is over its limit twice, then done; each deletion's status in
    `deletions`."""

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateSIPParticipant":
            return web.Response(status=504, text="upstream request timeout")
        if method == "DeleteRoom":
            if len(deletions) < 2:
                deletions.append(429)
                return web.Response(status=429, text=OVER_LIMIT, content_type="application/json")
            deletions.append(200)
        return livekit_done(method)

    return twirp


async def test_a_room_deletion_over_livekits_limit_is_asked_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls_service, "CLOSE_ROOM_RETRY_S", (0.1, 0.2, 0.4), raising=False)
    deletions: list[int] = []

    async with serving(late_dial_deletion_over_limit_twice(deletions)) as url:
        client = await app_on_livekit(start_app, url)
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 504, await resp.text()  # may have rung: its room is closed
        deadline = time.monotonic() + 10
        while 200 not in deletions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert deletions == [429, 429, 200]  # was [429]: the room left, the phone ringing


async def test_a_refused_placements_room_is_not_asked_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatch LiveKit refused over its limit rang nobody: its room deletion is one
    request, not one more every few seconds into the limit."""
    monkeypatch.setattr(calls_service, "CLOSE_ROOM_RETRY_S", (0.1, 0.1, 0.1), raising=False)
    asked: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        asked.append(method)
        if method in ("CreateDispatch", "DeleteRoom"):
            return web.Response(status=429, text=OVER_LIMIT, content_type="application/json")
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 503
        await asyncio.sleep(0.6)
    assert asked.count("DeleteRoom") == 1
