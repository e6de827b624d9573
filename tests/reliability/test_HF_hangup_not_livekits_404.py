"""A hang-up whose DeleteRoom is answered 404 by something other than LiveKit (a proxy's or
an API gateway's page for a route it does not pass on, Twirp's `bad_route`): nothing looked
for the room. Any 404 was read as LiveKit's `not_found`, the room gone: the hang-up was
answered 200 `canceled` and the call settled so, while its room (and the phone call) went on
in LiveKit. Only LiveKit's own `not_found` means the room is gone now."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550133", "name": "Not Gone", "language": "en", "emotion": "Calm"}


def _page_404(request: web.Request) -> web.Response:
    return web.Response(
        status=404, text="<html><h1>404 Not Found</h1></html>", content_type="text/html"
    )


def _bad_route(request: web.Request) -> web.Response:
    body = '{"code": "bad_route", "msg": "no handler for path"}'
    return web.Response(status=404, text=body, content_type="application/json")


NOT_LIVEKITS: dict[str, Callable[[web.Request], web.Response]] = {
    "a proxy's 404 page": _page_404,
    "twirp bad_route": _bad_route,
}


@pytest.mark.parametrize("case", list(NOT_LIVEKITS), ids=list(NOT_LIVEKITS))
async def test_a_404_that_is_not_livekits_not_found_does_not_cancel_a_live_call(
    start_app: AppFactory, case: str
) -> None:
    deletions: list[str] = []
    refuse_deletion = True

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "DeleteRoom":
            deletions.append(method)
            if refuse_deletion:
                return NOT_LIVEKITS[case](request)
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        placed = await client.post("/calls/outbound", json=CALL)
        assert placed.status == 200, await placed.text()
        call_id = (await placed.json())["call_id"]

        resp = await client.post(f"/calls/{call_id}/hangup")
        assert resp.status == 502, await resp.text()
        error = (await resp.json())["error"]
        assert error.startswith("LiveKit did not end the call: hang up: LiveKit answered 404")
        assert "LIVEKIT_URL" in error
        call = await (await client.get(f"/calls/{call_id}")).json()
        assert call["status"] == "dialing", call  # not canceled: its room was not deleted

        # The route is passed on again: a second hang-up ends the call.
        refuse_deletion = False
        again = await client.post(f"/calls/{call_id}/hangup")
        assert again.status == 200, await again.text()
    assert deletions == ["DeleteRoom", "DeleteRoom"]
