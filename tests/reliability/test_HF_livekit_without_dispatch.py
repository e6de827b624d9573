"""A self-hosted LiveKit from before agent dispatch: its ListRooms (the readiness probe) is
answered, /readyz says ready, and every call's CreateDispatch is Go's mux's plain 404 page
(no AgentDispatchService mounted). Each call was answered "no LiveKit API at this address:
check LIVEKIT_URL", a URL that was right; it now names the other cause too."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, serving

CALL = {"phone_number": "+14155550141", "name": "Old LiveKit", "language": "en", "emotion": "Calm"}


async def test_a_livekit_without_agent_dispatch_is_said_to_be_one(start_app: AppFactory) -> None:
    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        if "AgentDispatchService" in request.path:
            return web.Response(status=404, text="404 page not found\n")  # Go's net/http
        empty = api.ListRoomsResponse().SerializeToString()  # ListRooms, DeleteRoom
        return web.Response(body=empty, content_type="application/protobuf")

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        assert (await client.get("/readyz")).status == 200
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 502, await resp.text()
        error = (await resp.json())["error"]
        assert "agent dispatch: LiveKit answered 404" in error
        assert "LIVEKIT_URL" in error
        assert "without agent dispatch, too old for this service: upgrade it" in error, error
