"""A 200 protobuf answer that names nothing: an empty message (every field unset) from a proxy
or a stand-in at LIVEKIT_URL. LiveKit names what it made: a dispatch's id, and for a dial
the participant its SIP service created (livekit-server's CreateSIPParticipant passes on the
SIP service's participant id and identity, and its call id).

A dial answered so was taken as placed: 200 `dialing`, participant "" in the log, and the
call waited for a phone nobody may have rung. Now it is a dial that may have rung: 503 with
the call's id and no Retry-After, its Idempotency-Key kept (a retry under it is answered the
same, never dialled again), its room closed. A dispatch answered so was taken as an agent
on its way: the number was dialled for an agent that may never come (the callee answering
to silence). Now nothing is dialled: 503 with Retry-After, and a retry places the call.
"""

from __future__ import annotations

from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550129", "name": "Empty", "language": "en", "emotion": "Calm"}


def _empty() -> web.Response:
    return web.Response(body=b"", content_type="application/protobuf")


async def test_a_dial_answered_without_a_participant_may_have_rung(
    start_app: AppFactory,
) -> None:
    hits: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        hits.append(method)
        return _empty() if method == "CreateSIPParticipant" else livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "empty-dial"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert resp.status == 503, await resp.text()  # was 200 "dialing"
        assert "Retry-After" not in resp.headers  # not to be placed again
        body = await resp.json()
        assert "naming no participant" in body["error"]
        assert "may have been dialled" in body["error"]
        call_id = body["call_id"]
        call = await (await client.get(f"/calls/{call_id}")).json()
        assert call["status"] == "failed"

        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert again.status == 503
        assert again.headers.get("Idempotent-Replay") == "1"
        assert (await again.json())["call_id"] == call_id
    assert hits.count("CreateSIPParticipant") == 1  # nobody dialled twice
    assert "DeleteRoom" in hits  # the room, and a phone it may ring, closed


async def test_a_dispatch_answered_without_an_id_dials_nobody(start_app: AppFactory) -> None:
    hits: list[str] = []
    empty = True

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        hits.append(method)
        return _empty() if method == "CreateDispatch" and empty else livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "empty-dispatch"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert resp.status == 503, await resp.text()
        assert resp.headers.get("Retry-After") == "2"
        body = await resp.json()
        assert "naming no dispatch" in body["error"]
        assert "call_id" not in body  # nobody was called
        assert "CreateSIPParticipant" not in hits  # was dialled, for no agent

        empty = False
        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert again.status == 200, await again.text()
        assert "Idempotent-Replay" not in again.headers
    assert hits.count("CreateSIPParticipant") == 1
