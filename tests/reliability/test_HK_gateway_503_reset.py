"""A gateway before LiveKit that is Envoy (Istio, Contour, Envoy Gateway, Emissary) answers a
dial 503 when its connection to LiveKit broke after it had passed the dial on and before
LiveKit's answer began (Envoy's `UC`: LiveKit stopped or reset the connection while carrying
the dial out), its body saying so: `upstream connect error or disconnect/reset before headers.
reset reason: connection termination`. The phone may be ringing, as after nginx's 502
(7a29071). It was read as LiveKit unavailable, nothing placed: 503 with Retry-After and the
Idempotency-Key freed, so the client's retry under the same key dialled the person a second
time. Envoy's 503s for a dial it never passed on (no connection made to LiveKit, its circuit
breaker, no healthy upstream) are still "nothing placed"."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from common.livekit.client import reset_after_sent
from tests.conftest import AppFactory
from tests.helpers import app_on_livekit, livekit_done, serving

CALL = {"phone_number": "+14155550149", "name": "Envoy Reset", "language": "en", "emotion": "Calm"}
RESET = b"upstream connect error or disconnect/reset before headers. reset reason: "


async def _dial_answered(start_app: AppFactory, body: str) -> tuple[Any, Any, list[str]]:
    dials: list[str] = []

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        if method == "CreateSIPParticipant":
            dials.append(method)
            return web.Response(status=503, text=body, content_type="text/plain")
        return livekit_done(method)

    async with serving(twirp) as url:
        client = await app_on_livekit(start_app, url)
        headers = {"Idempotency-Key": "envoy-reset"}
        resp = await client.post("/calls/outbound", json=CALL, headers=headers)
        answer = await resp.json()
        assert resp.status == 503, answer
        again = await client.post("/calls/outbound", json=CALL, headers=headers)
        return resp, (again.status, again.headers.get("Idempotent-Replay")), dials


async def test_a_dial_envoy_lost_after_passing_it_on_may_have_rung(
    start_app: AppFactory,
) -> None:
    first, again, dials = await _dial_answered(
        start_app, (RESET + b"connection termination").decode()
    )
    assert "Retry-After" not in first.headers  # no retry is invited: it may be ringing
    answer = await first.json()
    assert "may have carried the request out" in answer["error"], answer
    assert answer["call_id"].startswith("call-")  # its client is told of the call
    assert again == (503, "1")  # the retry under the same key: its first answer, no dial
    assert dials == ["CreateSIPParticipant"]


async def test_a_dial_envoy_could_not_pass_on_was_not_placed(start_app: AppFactory) -> None:
    body = RESET + b"connection failure, transport failure reason: delayed connect error: 111"
    first, again, dials = await _dial_answered(start_app, body.decode())
    assert first.headers.get("Retry-After") == "2"
    assert "call_id" not in await first.json()  # nobody was called: the key is free
    assert again[1] is None and dials == ["CreateSIPParticipant"] * 2


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        (RESET + b"connection termination", True),
        (RESET + b"remote reset", True),
        (RESET + b"protocol error", True),
        (b"upstream connect error or disconnect/reset before headers", True),  # no reason said
        (RESET + b"connection failure", False),
        (
            b"upstream connect error or disconnect/reset before headers. retried and the latest"
            b" reset reason: remote connection failure, transport failure reason: refused",
            False,
        ),
        (RESET + b"overflow", False),  # its circuit breaker: never passed on
        (RESET + b"connection timeout", False),
        (RESET + b"remote refused stream reset", False),
        (b"no healthy upstream", False),
        (b"<h1>503 Service Unavailable</h1>", False),
    ],
)
def test_which_envoy_answers_were_passed_on(body: bytes, sent: bool) -> None:
    assert reset_after_sent(body) is sent
