"""LiveKit over a limit of its own (Twirp `resource_exhausted`, HTTP 429; a gateway's 429
page): nothing was done, and a retry later may well be. It was read as a refusal: 502 "LiveKit
did not place the call" with no Retry-After, what a trunk LiveKit does not have is answered,
so a client could not tell the call was worth placing again, nor when."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550129", "name": "Over Limit", "language": "en", "emotion": "Calm"}


def _twirp_429(request: web.Request) -> web.Response:
    body = '{"code": "resource_exhausted", "msg": "too many concurrent SIP calls"}'
    return web.Response(status=429, text=body, content_type="application/json")


def _page_429(request: web.Request) -> web.Response:
    page = "<html><body><h1>429 Too Many Requests</h1></body></html>"
    return web.Response(status=429, text=page, content_type="text/html")


# (the method over its limit, its answer)
OVER_LIMIT: dict[str, tuple[str, Callable[[web.Request], web.Response]]] = {
    "dial, LiveKit's resource_exhausted": ("CreateSIPParticipant", _twirp_429),
    "dispatch, a gateway's 429 page": ("CreateDispatch", _page_429),
}


@pytest.mark.parametrize("case", list(OVER_LIMIT), ids=list(OVER_LIMIT))
async def test_livekit_over_its_limit_is_a_503_to_retry(start_app: AppFactory, case: str) -> None:
    over, answer = OVER_LIMIT[case]
    hits: list[str] = []
    limited = True

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        hits.append(method)
        if method == over and limited:
            return answer(request)
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "over-limit"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert resp.status == 503, await resp.text()
        assert resp.headers.get("Retry-After") == "2"
        answer_body = await resp.json()
        assert "LiveKit answered 429" in answer_body["error"]
        assert "try again later" in answer_body["error"]
        assert "call_id" not in answer_body  # nobody was called
        (call,) = (await (await client.get("/calls")).json())["calls"]
        assert call["status"] == "failed"
        # LiveKit has room again: the retry under the same key places the call.
        limited = False
        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        assert again.status == 200, await again.text()
        assert "Idempotent-Replay" not in again.headers
    assert hits.count("CreateSIPParticipant") == (2 if over == "CreateSIPParticipant" else 1)
