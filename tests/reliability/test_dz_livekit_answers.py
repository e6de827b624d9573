"""What LIVEKIT_URL answers with a 200 is LiveKit's answer only if it is Twirp's protobuf."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from livekit import api

from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, serving

Client = TestClient[Any, Any]
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
        client = await app_on_livekit(start_app, url)
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


async def _placed_then_retried(client: Client, status: int) -> None:
    """A call whose dial LiveKit gave up waiting for, then its client's retry (same key): the
    first is answered 504 with the call's id, the retry with the same answer, no second dial."""
    headers = {"Idempotency-Key": "order-late-dial"}
    first = await client.post("/calls/outbound", json=CALL, headers=headers)
    assert first.status == 504, await first.text()
    answer = await first.json()
    said = f"LiveKit did not place the call: SIP dial: LiveKit answered {status} "
    assert answer["error"].startswith(said), answer
    assert "Retry-After" not in first.headers
    (listed,) = (await (await client.get("/calls")).json())["calls"]
    assert answer["call_id"] == listed["call_id"]  # its client is told of the call
    again = await client.post("/calls/outbound", json=CALL, headers=headers)
    assert again.status == 504 and again.headers["Idempotent-Replay"] == "1"
    assert await again.json() == answer


@pytest.mark.parametrize("code", ["deadline_exceeded", "canceled"])
async def test_a_dial_livekit_timed_out_on_may_have_rung(start_app: AppFactory, code: str) -> None:
    """LiveKit answering a dial `deadline_exceeded` (Twirp's 408: the SIP service that took
    it did not say in time how it went), or `canceled` (also 408: its handling canceled under
    it, as by a LiveKit stopping): the phone may be ringing all the same. It was read as a
    refusal before any dial (502): the call's Idempotency-Key was freed and its id not given,
    so the client's retry dialled the person a second time."""
    client = await start_app(sandbox_time_scale=0.0)
    sandbox = client.app[SANDBOX]
    error = TwirpError(code, "request timed out")
    sandbox.inject("CreateSIPParticipant", error=error, times=1)
    await _placed_then_retried(client, 408)
    assert [r.method for r in sandbox.requests].count("CreateSIPParticipant") == 1


async def test_a_dial_a_gateway_timed_out_on_may_have_rung(start_app: AppFactory) -> None:
    """A gateway before LiveKit (a load balancer, nginx) answering a dial 504 Gateway Timeout:
    it passed the dial on and gave up waiting for LiveKit's answer. It was read as LiveKit
    unavailable (503 Retry-After, nothing placed, the key freed): the retry dialled again."""
    dials: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateSIPParticipant":
            dials.append(method)
            page = "<html><body><h1>504 Gateway Time-out</h1></body></html>"
            return web.Response(status=504, text=page, content_type="text/html")
        answer = b""  # ListRooms, DeleteRoom, ListParticipants: nothing listed, done
        if method == "CreateDispatch":
            answer = api.AgentDispatch(id="AD_gateway").SerializeToString()
        return web.Response(body=answer, content_type="application/protobuf")

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        await _placed_then_retried(client, 504)
    assert dials == ["CreateSIPParticipant"]
