"""A gateway before LiveKit (a load balancer, nginx) answering a dial 502 Bad Gateway: it
passed the dial on and got no valid answer back (LiveKit stopped or reset the connection while
carrying it out), so the phone may be ringing. No LiveKit route answers 502 itself. It was
read as LiveKit unavailable, nothing placed: 503 with Retry-After 2 and the Idempotency-Key
freed, so the client's retry under the same key dialled the person a second time."""

from __future__ import annotations

from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550131", "name": "Bad Gateway", "language": "en", "emotion": "Calm"}


async def test_a_dial_a_gateway_answered_502_may_have_rung(start_app: AppFactory) -> None:
    dials: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateSIPParticipant":
            dials.append(method)
            page = "<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "bad-gateway"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert resp.status == 503, await resp.text()
        assert "Retry-After" not in resp.headers  # no retry is invited: it may be ringing
        answer = await resp.json()
        assert "LiveKit answered 502" in answer["error"]
        assert "may have carried the request out" in answer["error"]
        (listed,) = (await (await client.get("/calls")).json())["calls"]
        assert answer["call_id"] == listed["call_id"]  # its client is told of the call
        assert listed["status"] == "failed"
        # The retry under the same key is its first answer again, not a second dial.
        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert again.status == 503 and again.headers["Idempotent-Replay"] == "1"
        assert await again.json() == answer
    assert dials == ["CreateSIPParticipant"]
