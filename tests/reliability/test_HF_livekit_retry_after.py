"""LiveKit (or a gateway before it) asking to wait: a 503 or 429 with `Retry-After`. Nothing
was placed, and the client was told `Retry-After: 2` whatever LiveKit asked: a LiveKit in
maintenance for two minutes had every client try again every 2 s, each try a call recorded,
its config written and taken back, and refused. LiveKit's wait is passed on (whole seconds, at
most 10 minutes); without one, or with one not in seconds, 2 s as before."""

from __future__ import annotations

import pytest
from aiohttp import web
from livekit import api

from common.livekit.client import MAX_RETRY_AFTER_S, asked_wait_s
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, serving

CALL = {"phone_number": "+14155550139", "name": "Wait Asked", "language": "en", "emotion": "Calm"}

# (status, Content-Type, body, Retry-After sent, Retry-After our client gets)
ASKED = {
    "a gateway's 503 page, 120 s": (503, "text/html", "<h1>503</h1>", "120", "120"),
    "LiveKit's resource_exhausted, 30 s": (
        429,
        "application/json",
        '{"code": "resource_exhausted", "msg": "limit"}',
        "30",
        "30",
    ),
    "a day, capped": (503, "text/html", "<h1>503</h1>", "86400", str(MAX_RETRY_AFTER_S)),
    "an HTTP date": (503, "text/html", "", "Wed, 21 Oct 2099 07:28:00 GMT", "2"),
    "none": (503, "text/html", "", None, "2"),
}


@pytest.mark.parametrize("case", list(ASKED), ids=list(ASKED))
async def test_livekits_retry_after_is_passed_on(start_app: AppFactory, case: str) -> None:
    status, content_type, body, sent, told = ASKED[case]

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateDispatch":
            headers = {} if sent is None else {"Retry-After": sent}
            return web.Response(
                status=status, text=body, content_type=content_type, headers=headers
            )
        # ListRooms (the start-up probe), DeleteRoom: nothing, done
        empty = api.ListRoomsResponse().SerializeToString()
        return web.Response(body=empty, content_type="application/protobuf")

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 503, await resp.text()
        assert resp.headers.get("Retry-After") == told
        assert "call_id" not in await resp.json()  # nobody was called


def test_only_a_429_or_503_asks_a_wait() -> None:
    assert asked_wait_s(503, " 7 ") == 7
    assert asked_wait_s(429, "0") == 1
    assert asked_wait_s(500, "7") is None
    assert asked_wait_s(503, "-1") is None
    assert asked_wait_s(503, "1" * 400) == MAX_RETRY_AFTER_S
