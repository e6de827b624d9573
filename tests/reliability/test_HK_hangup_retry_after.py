"""A hang-up LiveKit answers 503 (or 429) with a long `Retry-After` (a LiveKit in maintenance
for ten minutes): c2ebc46 passed LiveKit's wait on to every LiveKit request's 503, so the
hang-up was answered `Retry-After: 600` and a client that honours it left the callee on the
line, the call going on, for ten minutes before hanging up again. LiveKit's wait is passed on
only for a call's placement (a retry places a call, each one recorded and refused); a hang-up
is tried again `Retry-After: 2` later, as before."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550147", "name": "Hang Up", "language": "en", "emotion": "Calm"}


@pytest.mark.parametrize("status", [503, 429])
async def test_a_hang_up_is_not_told_to_wait_livekits_long_wait(
    start_app: AppFactory, status: int
) -> None:
    refuse_deletion = True

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "DeleteRoom" and refuse_deletion:
            return web.Response(
                status=status,
                text="<h1>maintenance</h1>",
                content_type="text/html",
                headers={"Retry-After": "600"},
            )
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        placed = await client.post("/calls/outbound", json=CALL)
        assert placed.status == 200, await placed.text()
        call_id = (await placed.json())["call_id"]

        resp = await client.post(f"/calls/{call_id}/hangup")
        assert resp.status == 503, await resp.text()
        assert resp.headers.get("Retry-After") == "2"
        assert (await resp.json())["error"].startswith("LiveKit did not end the call")

        refuse_deletion = False  # LiveKit back: the hang-up tried again ends the call
        again = await client.post(f"/calls/{call_id}/hangup")
        assert again.status == 200, await again.text()
