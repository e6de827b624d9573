"""Forged and malformed LiveKit webhooks against the real app, beyond the one-forgery-per-test
integration tests (whose forgeries and signing helpers this reuses): every forgery against
several events, bare and `Bearer`, with nothing changed and nothing leaked into the logs;
oversized bodies; fuzzed headers; and well-signed junk, which must never get a 5xx."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import example, given
from hypothesis import strategies as st
from livekit.api import AccessToken
from livekit.protocol import models

from common.settings import DEV_API_KEY, DEV_API_SECRET
from handlers.keys import METRICS
from handlers.webhooks import MAX_WEBHOOK_BYTES
from tests.conftest import AppFactory
from tests.integration.test_webhooks import FORGERIES, event_json, post, quiet_app, sign
from tests.reliability.conftest import Figures, LogGuard, scaled
from tests.reliability.fuzz import LoopBridge, fuzz_settings

Client = TestClient[Any, Any]
PATH = "/webhooks/livekit"
NUMBER = "+14155550188"


async def _place(client: Client) -> str:
    body = {"phone_number": NUMBER, "name": "Forgery Target"}
    resp = await client.post("/calls/outbound", json=body)
    assert resp.status == 200
    call_id: str = (await resp.json())["call_id"]
    return call_id


async def _state(client: Client, call_id: str) -> dict[str, Any]:
    call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
    return call


def _events(call_id: str) -> dict[str, bytes]:
    sip = {"sip.callStatus": "hangup", "sip.phoneNumber": NUMBER}
    hung_up = int(models.DisconnectReason.CLIENT_INITIATED)
    return {
        "room_finished": event_json("room_finished", call_id),
        "participant_left": event_json("participant_left", call_id, attributes=sip, reason=hung_up),
        "participant_joined": event_json(
            "participant_joined", call_id, attributes={"sip.callStatus": "active"}
        ),
    }


def _verification_failures(client: Client) -> float:
    value = client.app[METRICS].webhook_verification_failures._value.get()
    return float(value)


async def test_every_forgery_refused_and_nothing_leaked(
    start_app: AppFactory, log_guard: LogGuard, figures: Figures
) -> None:
    client = await quiet_app(start_app)
    call_id = await _place(client)
    before = await _state(client, call_id)
    tried = 0
    for name, forge in FORGERIES.items():
        for kind, body in _events(call_id).items():
            token = forge(body)
            for auth in {token, None if token is None else f"Bearer {token}"}:
                assert await post(client, body, auth) == 401, (name, kind)
                tried += 1
    assert await _state(client, call_id) == before  # not one event applied
    assert _verification_failures(client) == tried
    assert not log_guard.problems()  # no token, secret or number in any refusal's log line

    body = _events(call_id)["room_finished"]
    assert await post(client, body, sign(body)) == 200  # the genuine article still works
    assert (await _state(client, call_id))["status"] == "no_answer"
    figures.add(
        f"{tried} forged posts ({len(FORGERIES)} kinds x 3 events, bare and Bearer): "
        f"{tried} x 401, 0 applied, 0 secrets/JWTs/numbers in logs"
    )


async def test_oversized_bodies_413_before_any_check(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await _place(client)
    before = await _state(client, call_id)
    finished = json.loads(_events(call_id)["room_finished"])
    finished["padding"] = " " * MAX_WEBHOOK_BYTES  # ignored field, valid event, too big
    big = json.dumps(finished).encode()
    for auth in (sign(big), None, "Bearer garbage"):
        assert await post(client, big, auth) == 413
    assert await _state(client, call_id) == before


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token_with(claims: dict[str, Any], secret: str) -> str:
    token = AccessToken(DEV_API_KEY, secret)
    if "sha256" in claims:
        token = token.with_sha256(str(claims["sha256"]))
    return token.to_jwt()


forged_tokens = st.one_of(
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200),
    st.builds(
        lambda a, b, c: f"{_b64(a)}.{_b64(b)}.{_b64(c)}",
        st.binary(max_size=60),
        st.binary(max_size=200),
        st.binary(max_size=60),
    ),
    st.builds(
        lambda digest, secret: _token_with({"sha256": digest}, secret),
        st.text(st.characters(min_codepoint=48, max_codepoint=122), max_size=44),
        st.sampled_from([DEV_API_SECRET, "x" * 40, "another-secret-that-is-long-enough-000000"]),
    ),
)
forged_headers = st.none() | forged_tokens | forged_tokens.map(lambda t: f"Bearer {t}")


async def test_fuzzed_headers_never_pass_or_fail(start_app: AppFactory, figures: Figures) -> None:
    client = await quiet_app(start_app)
    call_id = await _place(client)
    before = await _state(client, call_id)
    bodies = list(_events(call_id).values())
    bridge = LoopBridge(asyncio.get_running_loop())
    statuses: dict[int, int] = {}

    @fuzz_settings(scaled(200, minimum=20))
    @given(auth=forged_headers, which=st.integers(0, len(bodies) - 1))
    def check(auth: str | None, which: int) -> None:
        body = bodies[which]
        status = bridge.run(post(client, body, auth))
        statuses[status] = statuses.get(status, 0) + 1
        assert status == 401

    await asyncio.to_thread(check)
    assert await _state(client, call_id) == before
    figures.add(f"{sum(statuses.values())} fuzzed Authorization headers: all 401, no change")


signed_junk = st.one_of(
    st.binary(max_size=3000),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=50),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "event": st.sampled_from(["room_finished", "participant_left", "egress_ended", ""]),
            "room": st.fixed_dictionaries({"name": st.just("call-000000000000")}),
            "createdAt": st.integers() | st.text(max_size=20),
            "participant": st.dictionaries(
                st.sampled_from(["kind", "state", "attributes", "disconnectReason"]),
                st.integers() | st.text(max_size=20) | st.dictionaries(st.text(), st.text()),
            ),
        }
    ).map(lambda v: json.dumps(v).encode()),
)


async def test_signed_junk_never_5xx(
    start_app: AppFactory, log_guard: LogGuard, figures: Figures
) -> None:
    """A body signed with our secret that is not a LiveKit event: 400 (or 200 if it parses as
    one about no call of ours), never a 5xx, never its content in the logs."""
    client = await quiet_app(start_app)
    bridge = LoopBridge(asyncio.get_running_loop())
    statuses: dict[int, int] = {}
    log_guard.hide_numbers(NUMBER)

    @fuzz_settings(scaled(200, minimum=20))
    @given(body=signed_junk)
    @example(body=b"[" * 30_000 + b"]" * 30_000)
    @example(body=b'{"event": "room_finished", "createdAt": "' + NUMBER.encode() + b'"}')
    @example(body=b'{"event": "x", "participant": {"kind": "' + NUMBER.encode() + b'"}}')
    @example(body=b"\xff\xfe not utf-8")
    def check(body: bytes) -> None:
        status = bridge.run(post(client, body, sign(body)))
        statuses[status] = statuses.get(status, 0) + 1
        assert status in (200, 400)

    await asyncio.to_thread(check)
    figures.add(
        "signed junk: "
        + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
        + ", 0 x 5xx, no body content logged"
    )
