"""LiveKit (the sandbox) down, slow or answering errors: the client gets a clear 502/503/504
JSON error, the call's row is `failed` with the reason, its config record is gone, and nothing
is dialled twice (no retry by us or by livekit-api)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import server
from common.livekit import client as livekit_client
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import serving
from tests.reliability.conftest import Figures

Client = TestClient[Any, Any]
CALL = {"phone_number": "+14155550177", "name": "Lk Fault", "language": "en", "emotion": "Calm"}
TIMEOUT_S = 0.5
SLOW_S = 1.5  # longer than TIMEOUT_S: the sandbox still finishes the request afterwards

# (method, fault, expected HTTP status, words the call's reason must contain)
FAULTS: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "dispatch internal error": (
        "CreateDispatch",
        {"error": TwirpError("internal", "dispatcher crashed")},
        503,
        "agent dispatch: LiveKit answered 500 internal",
    ),
    "dispatch permission denied": (
        "CreateDispatch",
        {"error": TwirpError("permission_denied", "no agent grant")},
        502,
        "agent dispatch: LiveKit answered 403 permission_denied",
    ),
    "sip unavailable": (
        "CreateSIPParticipant",
        {"error": TwirpError("unavailable", "sip service is restarting")},
        503,
        "SIP dial: LiveKit answered 503 unavailable",
    ),
    "sip invalid argument": (
        "CreateSIPParticipant",
        {"error": TwirpError("invalid_argument", "trunk not found")},
        502,
        "SIP dial: LiveKit answered 400 invalid_argument",
    ),
    # (a 486 Busy or 480 ends busy or no_answer: test_calls_api's SIP status test)
    "sip call error 403": (
        "CreateSIPParticipant",
        {
            "error": TwirpError(
                "permission_denied",
                "sip status 403: Forbidden",
                {"sip_status_code": "403", "sip_status": "Forbidden"},
            )
        },
        502,
        "SIP dial: SIP 403 Forbidden",
    ),
    "dispatch slow": ("CreateDispatch", {"delay_s": SLOW_S}, 504, "agent dispatch: LiveKit did"),
    "sip slow": ("CreateSIPParticipant", {"delay_s": SLOW_S}, 504, "SIP dial: LiveKit did not"),
}


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's LiveKit timeouts (10 s) shortened, so a slow LiveKit takes a test 1 s."""
    monkeypatch.setattr(livekit_client, "REQUEST_TIMEOUT_S", TIMEOUT_S)
    monkeypatch.setattr(server, "REQUEST_TIMEOUT_S", TIMEOUT_S)


def _count(client: Client, method: str) -> int:
    return sum(r.method == method for r in client.app[SANDBOX].requests)


async def _only_call(client: Client) -> dict[str, Any]:
    (summary,) = (await (await client.get("/calls")).json())["calls"]
    call: dict[str, Any] = await (await client.get(f"/calls/{summary['call_id']}")).json()
    return call


def _config_calls(tmp_path: Path) -> dict[str, Any]:
    calls: dict[str, Any] = json.loads((tmp_path / "config.json").read_text())["calls"]
    return calls


async def _refused(client: Client, status: int) -> dict[str, Any]:
    resp = await client.post("/calls/outbound", json=CALL)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    answer: dict[str, Any] = await resp.json()
    assert answer["status"] == "error"
    assert answer["error"].startswith("LiveKit did not place the call: ")
    # LiveKit unavailable and nothing placed (the key is free): the 503 says when to try
    # again, as the database's does (probe AY: it had no Retry-After).
    assert resp.headers.get("Retry-After") == ("2" if status == 503 else None)
    return answer


@pytest.mark.usefixtures("short_timeouts")
@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
async def test_livekit_fault(
    start_app: AppFactory, tmp_path: Path, fault: str, figures: Figures
) -> None:
    method, spec, status, reason = FAULTS[fault]
    client = await start_app(sandbox_time_scale=0.01)
    sandbox = client.app[SANDBOX]
    sandbox.inject(method, **spec)
    answer = await _refused(client, status)
    call = await _only_call(client)
    assert call["status"] == "failed" and call["outcome"] == "failed"
    assert call["reason"].startswith(reason)
    assert answer["error"].endswith(call["reason"])
    assert _config_calls(tmp_path) == {}
    # A slow LiveKit still finishes what it was asked; whatever it then reports, the call
    # stays failed and nothing is sent again.
    async with asyncio.timeout(SLOW_S + 5):
        while not any(r.method == method for r in sandbox.requests):
            await asyncio.sleep(0.02)
    await sandbox.wait_idle(5)
    assert _count(client, "CreateDispatch") == 1
    assert _count(client, "CreateSIPParticipant") == (0 if method == "CreateDispatch" else 1)
    call_after = await _only_call(client)
    assert call_after["status"] == "failed" and call_after["reason"] == call["reason"]
    assert _config_calls(tmp_path) == {}
    # Its room is deleted afterwards (best effort, off the request's path): no agent lingers
    # in it, and a dial that LiveKit completes late is hung up. (A dispatch that LiveKit
    # completes after our timeout can recreate the room; its agent then hangs up by itself
    # after the ringing timeout, which is the agent's own test.)
    if not ("delay_s" in spec and method == "CreateDispatch"):
        async with asyncio.timeout(SLOW_S + 5):
            while not any(
                r.method == "DeleteRoom" and r.body.get("room") == call["call_id"]
                for r in sandbox.requests
            ):
                await asyncio.sleep(0.02)
        await sandbox.wait_idle(5)
        assert call["call_id"] not in sandbox.rooms

    sandbox.faults.clear()  # LiveKit is back: the same app places calls again
    for _ in range(3):  # a loaded machine can exceed the shortened 0.5 s: 504, then try again
        placed = await client.post("/calls/outbound", json=CALL)
        if placed.status != 504:
            break
    assert placed.status == 200
    figures.add(f"{status} '{answer['error']}'")


async def test_livekit_down(
    start_app: AppFactory, tmp_path: Path, figures: Figures, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    sandbox = client.app[SANDBOX]
    await sandbox.stop()
    answer = await _refused(client, 503)
    for _ in range(3):  # a LiveKit down fails every call: said once a minute
        await _refused(client, 503)
    said = [r for r in caplog.records if "could not be placed" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "ERROR"
    oldest = (await (await client.get("/calls")).json())["calls"][-1]
    call = await (await client.get(f"/calls/{oldest['call_id']}")).json()
    assert call["status"] == "failed"
    assert call["reason"].startswith("agent dispatch: LiveKit unreachable")
    assert _config_calls(tmp_path) == {}
    assert list(sandbox.requests) == []  # nothing reached LiveKit, nothing was retried
    ready = await client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["details"][0]["component"] == "livekit"
    assert (await client.get("/calls")).status == 200  # the rest of the API keeps serving
    figures.add(f"503 '{answer['error']}'; /readyz 503 names livekit")


@pytest.mark.usefixtures("short_timeouts")
async def test_a_dial_landing_after_its_timeout_is_hung_up(start_app: AppFactory) -> None:
    """LiveKit answers the dial after our timeout and dials all the same, re-creating the room
    we deleted: the call is settled failed, so its room is ended again as soon as LiveKit says
    it is up. Before, the callee was rung and left with nobody for the whole scenario."""
    client = await start_app(sandbox_time_scale=1.0)  # the callee would stay on for 30 s
    sandbox = client.app[SANDBOX]
    sandbox.inject("CreateSIPParticipant", delay_s=SLOW_S)
    await _refused(client, 504)
    call_id = (await _only_call(client))["call_id"]

    def deletions() -> int:
        return sum(
            r.method == "DeleteRoom" and r.body.get("room") == call_id for r in sandbox.requests
        )

    # Deleted once as the placement failed, then again once the late dial re-created it.
    async with asyncio.timeout(SLOW_S + 5):
        while deletions() < 2:
            await asyncio.sleep(0.02)
    async with asyncio.timeout(3):
        while call_id in sandbox.rooms:
            await asyncio.sleep(0.02)
    assert (await _only_call(client))["status"] == "failed"


@pytest.mark.usefixtures("short_timeouts")
async def test_a_late_dials_room_is_said_alive_once(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A dial landing after its timeout brings the room's webhooks (room_started, the
    callee's participant_joined, its track_published): the call is said alive once, not
    once for each of them (three WARNINGs a call; a hundred calls timing out while LiveKit
    was slow wrote three hundred)."""
    client = await start_app(sandbox_time_scale=1.0)
    sandbox = client.app[SANDBOX]
    sandbox.inject("CreateSIPParticipant", delay_s=SLOW_S)
    with caplog.at_level(logging.INFO):
        await _refused(client, 504)
        call_id = (await _only_call(client))["call_id"]
        # Deleted as the placement failed, then once for each of the late dial's three
        # webhooks (each still ends the room: only the line is said once).
        async with asyncio.timeout(SLOW_S + 5):
            while _count(client, "DeleteRoom") < 4:
                await asyncio.sleep(0.02)
        await sandbox.wait_idle(5)
    alive = [
        r.getMessage()
        for r in caplog.records
        if "its room is alive" in r.getMessage() and call_id in r.getMessage()
    ]
    assert len(alive) == 1, alive
    assert "(room_started)" in alive[0]


async def test_readyz_answers_within_its_bound_when_livekit_is_slow(start_app: AppFactory) -> None:
    """A load balancer's probe gives up after a few seconds: /readyz took LiveKit's 10 s
    request bound (plus the other probes, one after the other) to say it was not ready."""
    from handlers import health

    client = await start_app(sandbox_time_scale=0.01)
    client.app[SANDBOX].inject("ListRooms", delay_s=5.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get("/readyz")
    took = loop.time() - started
    assert resp.status == 503
    (failure,) = (await resp.json())["details"]
    assert failure["component"] == "livekit" and "did not answer within" in failure["error"]
    assert took < health.PROBE_TIMEOUT_S + 1.0, took


async def test_a_livekit_url_that_is_not_livekit_fails_calls_cleanly(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """LIVEKIT_URL pointing at something that answers 200 with a page (a proxy, another
    service): protobuf's DecodeError was a 500 without a call id, a call left `dialing`, and
    a /readyz 500 with a traceback for every probe."""
    from aiohttp import web

    async def a_page(request: web.Request) -> web.Response:
        return web.Response(text="<html>Welcome to nginx!</html>", content_type="text/html")

    async with serving(a_page) as url:
        client = await start_app(
            livekit_url=url,
            livekit_api_key="APInotlivekit",
            livekit_api_secret="not-livekit-secret-0123456789abcdef0123",
            sip_outbound_trunk_id="ST_nginx",
        )
        answer = await _refused(client, 503)
        assert "the answer is not LiveKit's (is LIVEKIT_URL a LiveKit server?)" in answer["error"]
        call = await _only_call(client)
        assert call["status"] == "failed" and call["reason"].startswith("agent dispatch: ")
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert [d["component"] for d in (await ready.json())["details"]] == ["livekit"]
        assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
