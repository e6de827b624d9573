"""What LIVEKIT_URL answers with a 200 is LiveKit's answer only if it is Twirp's protobuf."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import serving

CALL = {"phone_number": "+14155550178", "name": "Not Livekit", "language": "en", "emotion": "Calm"}
NOT_LIVEKIT = "the answer is not LiveKit's (is LIVEKIT_URL a LiveKit server?)"


@pytest.mark.parametrize(
    "content_type", ["application/octet-stream", "text/plain", "application/json"]
)
async def test_an_empty_200_is_not_livekit_placing_the_call(
    start_app: AppFactory, content_type: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that answers every POST with an empty 200 (a default backend, a health
    endpoint behind a proxy): an empty body parses as a protobuf message with every field
    unset, so the call was answered 200 `dialing` with nobody called (dispatch and participant
    ids empty), and /readyz said ready."""
    posts: list[str] = []

    async def empty_ok(request: web.Request) -> web.Response:
        await request.read()
        posts.append(request.path)
        return web.Response(status=200, body=b"", content_type=content_type)

    async with serving(empty_ok) as url:
        client = await start_app(
            livekit_url=url,
            livekit_api_key="APIemptyanswers",
            livekit_api_secret="empty-answers-secret-0123456789abcdef0123",
            sip_outbound_trunk_id="ST_empty",
        )
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 503, await resp.text()
        answer: dict[str, Any] = await resp.json()
        assert answer["error"] == f"LiveKit did not place the call: agent dispatch: {NOT_LIVEKIT}"
        (summary,) = (await (await client.get("/calls")).json())["calls"]
        assert summary["status"] == "failed"
        assert summary["reason"] == f"agent dispatch: {NOT_LIVEKIT}"
        # Nothing was taken for a dial: the SIP participant was never asked for.
        assert not [p for p in posts if p.endswith("/CreateSIPParticipant")], posts
        ready = await client.get("/readyz")
        assert ready.status == 503
        (failure,) = (await ready.json())["details"]
        assert failure == {"component": "livekit", "error": f"readiness probe: {NOT_LIVEKIT}"}
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_livekits_empty_answers_are_still_answers(start_app: AppFactory) -> None:
    """The sandbox speaks Twirp as LiveKit does: its empty protobuf answers (no rooms listed,
    a room deleted) are taken, and a call is placed as before."""
    client = await start_app()
    assert (await client.get("/readyz")).status == 200  # ListRooms: no room, an empty body
    resp = await client.post("/calls/outbound", json=CALL)
    assert resp.status == 200, await resp.text()
    call_id = (await resp.json())["call_id"]
    hangup = await client.post(f"/calls/{call_id}/hangup")  # DeleteRoom: an empty answer
    assert hangup.status == 200, await hangup.text()
