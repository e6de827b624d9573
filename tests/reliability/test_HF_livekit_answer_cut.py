"""LiveKit's answer to a dial broken off mid-body (its status and headers came, then the
connection closed: LiveKit or a proxy before it stopped): the dial may have been made. It was
said "LiveKit unreachable (ClientPayloadError)" in the client's answer, the call's reason and
the ERROR line, sending its operator to check a network that had carried the request; it
says the answer broke off, and the call stays one that may have rung."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550137", "name": "Cut Off", "language": "en", "emotion": "Calm"}


async def test_a_dial_answer_broken_off_says_so_and_may_have_rung(start_app: AppFactory) -> None:
    dials: list[str] = []

    async def twirp(request: web.Request) -> web.StreamResponse:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateSIPParticipant":
            dials.append(method)
            info = api.SIPParticipantInfo(participant_id="PA_cut", sip_call_id="SCL_cut")
            whole = info.SerializeToString()
            headers = {"Content-Type": "application/protobuf", "Content-Length": str(len(whole))}
            cut = web.StreamResponse(headers=headers)
            await cut.prepare(request)
            await cut.write(whole[:5])
            assert request.transport is not None
            request.transport.close()
            return cut
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "cut-off"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert resp.status == 503, await resp.text()
        answer = await resp.json()
        assert "answer broke off before its end" in answer["error"], answer
        assert "unreachable" not in answer["error"] and "ClientPayloadError" not in answer["error"]
        assert "Retry-After" not in resp.headers
        call = await (await client.get(f"/calls/{answer['call_id']}")).json()
        assert call["status"] == "failed"
        assert call["reason"] == "SIP dial: " + answer["error"].split(": SIP dial: ", 1)[1]
        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert again.headers.get("Idempotent-Replay") == "1"
    assert dials == ["CreateSIPParticipant"]
