"""What LIVEKIT_URL answers, read with care: an error body that is not Twirp's JSON object, an
answer without end, a redirect to another origin, LiveKit's words holding a token or control
characters. Each was a 500 (with the call left `dialing` and a retry answered 200 for a call
never dialled), a dead reaper, 7.5 GB of memory, or the call's data posted elsewhere.

The LiveKit here is a local fake speaking Twirp (protobuf answers, JSON errors) as LiveKit
does, with the odd answers a proxy or a broken server gives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from livekit import api

from common.calls.service import ROOM_CHECK_AFTER_S
from common.livekit import client as livekit_client
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import serving

Client = TestClient[Any, Any]
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALL = {"phone_number": "+14155550177", "name": "Lk Answer", "language": "en", "emotion": "Calm"}
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def _proto(message: Any) -> web.Response:
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")


def _json_error(status: int, text: str) -> Answer:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=text, content_type="application/json")

    return answer


ANSWERS: dict[str, Answer] = {
    "CreateDispatch": lambda r: asyncio.sleep(0, _proto(api.AgentDispatch(id="AD_fake"))),
    "CreateSIPParticipant": lambda r: asyncio.sleep(
        0, _proto(api.SIPParticipantInfo(participant_id="PA_fake", sip_call_id="SCL_fake"))
    ),
    "ListRooms": lambda r: asyncio.sleep(0, _proto(api.ListRoomsResponse())),
    "DeleteRoom": lambda r: asyncio.sleep(0, _proto(api.DeleteRoomResponse())),
}


class FakeLiveKit:
    """Twirp on 127.0.0.1: each method answers as `answers` says (LiveKit's way by default)."""

    def __init__(self) -> None:
        self.answers = dict(ANSWERS)
        self.hits: list[str] = []
        self.url = ""

    async def _twirp(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        self.hits.append(method)
        await request.read()
        return await self.answers[method](request)


@pytest.fixture
async def fake_livekit() -> AsyncIterator[FakeLiveKit]:
    fake = FakeLiveKit()
    async with serving(fake._twirp, "/twirp/{service}/{method}", "POST") as url:
        fake.url = url
        yield fake


async def _start(start_app: AppFactory, fake: FakeLiveKit) -> Client:
    return await start_app(
        livekit_url=fake.url,
        livekit_api_key="APIfakelivekit",
        livekit_api_secret="fake-livekit-secret-0123456789abcdef0123",
        sip_outbound_trunk_id="ST_fake",
    )


async def _only_call(client: Client) -> dict[str, Any]:
    (summary,) = (await (await client.get("/calls")).json())["calls"]
    call: dict[str, Any] = await (await client.get(f"/calls/{summary['call_id']}")).json()
    return call


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r.getMessage() for r in caplog.records if r.exc_info], "a traceback was logged"


# An error body livekit-api could not read (AttributeError inside it), by where it came.
MALFORMED_ERRORS = {
    "dispatch, a list": ("CreateDispatch", 400, "[1, 2, 3]", 502),
    "dispatch, a string": ("CreateDispatch", 500, '"x"', 503),
    "dispatch, empty json": ("CreateDispatch", 503, "", 503),
    "dial, meta a string": (
        "CreateSIPParticipant",
        400,
        '{"code": "invalid_argument", "msg": "no", "meta": "x"}',
        502,
    ),
    "dial, meta a list": ("CreateSIPParticipant", 400, '{"code": 5, "meta": [1]}', 502),
    "dial, a list": ("CreateSIPParticipant", 404, "[1]", 502),
}


@pytest.mark.parametrize("case", list(MALFORMED_ERRORS), ids=list(MALFORMED_ERRORS))
async def test_an_error_body_that_is_not_twirps_fails_the_call_cleanly(
    start_app: AppFactory,
    fake_livekit: FakeLiveKit,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    method, status, body, answered = MALFORMED_ERRORS[case]
    fake_livekit.answers[method] = _json_error(status, body)
    client = await _start(start_app, fake_livekit)
    headers = {"Idempotency-Key": f"odd-{method}"}
    resp = await client.post("/calls/outbound", json=CALL, headers=headers)
    assert resp.status == answered, await resp.text()
    assert (await resp.json())["error"].startswith("LiveKit did not place the call: ")
    call = await _only_call(client)
    assert call["status"] == "failed", call
    # The key was freed with the call never dialled: a retry is placed anew, not "success".
    again = await client.post("/calls/outbound", json=CALL, headers=headers)
    assert again.status == answered and "Idempotent-Replay" not in again.headers
    assert fake_livekit.hits.count(method) == 2
    _no_traceback(caplog)


async def test_livekits_words_are_kept_without_tokens_or_control_characters(
    start_app: AppFactory, fake_livekit: FakeLiveKit
) -> None:
    """A proxy echoing our Authorization header put a token into the call's reason, the API's
    answer and the log; a lone surrogate failed the reason's storing (a 500)."""
    message = f"no trunk for Bearer {TOKEN} or {TOKEN}\u0000\ud800\nat +14155550177 " + "x" * 900
    body = '{"code": "invalid_argument", "msg": ' + _json_string(message) + "}"
    fake_livekit.answers["CreateSIPParticipant"] = _json_error(400, body)
    client = await _start(start_app, fake_livekit)
    resp = await client.post("/calls/outbound", json=CALL)
    assert resp.status == 502, await resp.text()
    reason = (await _only_call(client))["reason"]
    assert reason.startswith("SIP dial: LiveKit answered 400 invalid_argument: no trunk for")
    assert "eyJ" not in reason and "[token]" in reason
    assert "\u0000" not in reason and "\n" not in reason and "\ufffd" in reason
    assert "+14155550177" not in reason and len(reason) < 400
    assert (await resp.json())["error"].endswith(reason)


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)  # ASCII escapes: the lone surrogate travels as \ud800


async def test_an_answer_without_end_is_not_read_past_its_bound(
    start_app: AppFactory, fake_livekit: FakeLiveKit
) -> None:
    """A 200 streaming for ever took 7.5 GB and held the loop 15 s; read up to 4 MiB now."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/protobuf"})
        await response.prepare(request)
        chunk = b"\x00" * 65536
        while sent < 64 * livekit_client.MAX_ANSWER_BYTES:  # bounded: it stops by itself
            await response.write(chunk)
            sent += len(chunk)
        return response

    fake_livekit.answers["CreateDispatch"] = endless
    client = await _start(start_app, fake_livekit)
    health_waits: list[float] = []

    async def health() -> None:  # the loop stays free while the answer is refused
        loop = asyncio.get_running_loop()
        for _ in range(20):
            started = loop.time()
            assert (await client.get("/healthz")).status == 200
            health_waits.append(loop.time() - started)
            await asyncio.sleep(0.01)

    placing = asyncio.ensure_future(client.post("/calls/outbound", json=CALL))
    await health()
    resp = await placing
    assert resp.status == 503, await resp.text()
    assert "its answer is longer than 4 MiB" in (await resp.json())["error"]
    assert (await _only_call(client))["status"] == "failed"
    assert sent < 16 * livekit_client.MAX_ANSWER_BYTES, sent  # it stopped reading
    assert max(health_waits) < 1.0, health_waits


async def test_a_content_length_over_the_bound_is_refused_unread(
    start_app: AppFactory, fake_livekit: FakeLiveKit
) -> None:
    async def big(request: web.Request) -> web.Response:
        body = b"\x00" * (livekit_client.MAX_ANSWER_BYTES + 1)
        return web.Response(body=body, content_type="application/protobuf")

    fake_livekit.answers["CreateDispatch"] = big
    client = await _start(start_app, fake_livekit)
    resp = await client.post("/calls/outbound", json=CALL)
    assert resp.status == 503
    assert "its answer is longer than 4 MiB" in (await resp.json())["error"]


async def test_a_redirect_is_not_followed(start_app: AppFactory, fake_livekit: FakeLiveKit) -> None:
    """A 307 to another origin re-posted the call's dispatch (number, instructions) there,
    and that origin's empty 200 was taken for the dispatch: the callee was dialled."""
    elsewhere: list[bytes] = []

    async def other_origin(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(body=b"", content_type="application/protobuf")

    async with serving(other_origin) as other:
        target = f"{other}/stolen"

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target)

        fake_livekit.answers["CreateDispatch"] = redirect
        client = await _start(start_app, fake_livekit)
        resp = await client.post("/calls/outbound", json=CALL)
        assert resp.status == 503, await resp.text()
        assert "LIVEKIT_URL answered a redirect (307)" in (await resp.json())["error"]
        assert elsewhere == []
        assert "CreateSIPParticipant" not in fake_livekit.hits  # nobody was dialled
        assert (await _only_call(client))["status"] == "failed"


async def test_the_reaper_goes_on_after_an_odd_answer(
    start_app: AppFactory, fake_livekit: FakeLiveKit, caplog: pytest.LogCaptureFixture
) -> None:
    """ListRooms answering `400 [1,2,3]` killed the reaper for good, silently (and, at
    start-up, stopped the server with a traceback)."""
    fake_livekit.answers["ListRooms"] = _json_error(400, "[1, 2, 3]")
    client = await _start(start_app, fake_livekit)
    assert (await client.post("/calls/outbound", json=CALL)).status == 200
    later = time.time() + ROOM_CHECK_AFTER_S + 60  # the call's room is asked about then
    assert await client.app[CALLS].settle_gone_rooms(later) == 0  # raised AttributeError
    assert "ListRooms" in fake_livekit.hits
    assert (await _only_call(client))["status"] == "dialing"  # nothing settled on no answer
    ready = await client.get("/readyz")
    assert ready.status == 503  # was a 500 with a traceback
    (detail,) = (await ready.json())["details"]
    assert detail["component"] == "livekit" and "LiveKit answered 400 unknown" in detail["error"]
    _no_traceback(caplog)


async def test_a_reaper_pass_that_fails_on_a_defect_is_logged_and_the_next_one_runs(
    start_app: AppFactory,
    fake_livekit: FakeLiveKit,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = await _start(start_app, fake_livekit)
    calls = client.app[CALLS]
    passes = 0

    async def failing_pass(*, starting: bool = False) -> int:
        nonlocal passes
        passes += 1
        raise RuntimeError("a defect")

    monkeypatch.setattr(calls, "reap", failing_pass)
    await calls.reap_logged(starting=True)  # raised out of start-up: the server stopped
    await calls.reap_logged()
    assert passes == 2
    said = [r for r in caplog.records if "reaper pass failed" in r.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None  # once a minute, with its traceback


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (None, "LiveKit at {url} answers"),
        (_json_error(401, '{"code": "unauthenticated", "msg": "invalid token"}'), "401"),
        (_json_error(404, '{"code": "not_found", "msg": ""}'), "404"),
    ],
    ids=["answers", "wrong key", "a path in the url"],
)
async def test_start_up_says_whether_livekit_answers(
    start_app: AppFactory,
    fake_livekit: FakeLiveKit,
    caplog: pytest.LogCaptureFixture,
    answer: Answer | None,
    said: str,
) -> None:
    """Probe AO: a wrong key, a URL with a path, a host that does not answer started without
    a word, and the first call said it. One request at start-up says it (a warning, not a
    refusal: LiveKit may be down a while)."""
    caplog.set_level(logging.INFO, logger="server")
    if answer is not None:
        fake_livekit.answers["ListRooms"] = answer
    await _start(start_app, fake_livekit)
    expected = said.format(url=fake_livekit.url)

    async def told() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "server" and "LiveKit at" in r.getMessage()]

    async with asyncio.timeout(5):
        while not (lines := await told()):
            await asyncio.sleep(0.02)
    (line,) = lines
    assert expected in line.getMessage()
    assert line.levelno == (logging.INFO if answer is None else logging.WARNING)
    if answer is not None:
        assert "check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in line.getMessage()
    assert fake_livekit.hits == ["ListRooms"]


async def test_livekit_refusing_our_key_names_the_settings(
    start_app: AppFactory, fake_livekit: FakeLiveKit
) -> None:
    """A key revoked or rotated in LiveKit while the server runs: /readyz and a call's answer
    said "LiveKit answered 401 unauthenticated: invalid token", naming no setting (only the
    start-up line, long gone, did)."""
    client = await _start(start_app, fake_livekit)
    refused = _json_error(401, '{"code": "unauthenticated", "msg": "invalid token"}')
    fake_livekit.answers["ListRooms"] = refused
    fake_livekit.answers["CreateDispatch"] = refused
    hint = "(check LIVEKIT_API_KEY and LIVEKIT_API_SECRET, and this host's clock)"
    ready = await client.get("/readyz")
    (detail,) = (await ready.json())["details"]
    assert ready.status == 503 and detail["error"].endswith(f"invalid token {hint}")
    placed = await client.post("/calls/outbound", json=CALL)
    assert placed.status == 502 and hint in (await placed.json())["error"]
