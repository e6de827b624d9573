"""The sandbox against the real clients: livekit-api's LiveKitAPI for Twirp, plain aiohttp for
JSON bodies and bad tokens, and livekit-api's WebhookReceiver for every webhook it posts."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from google.protobuf.duration_pb2 import Duration
from livekit.api import (
    AccessToken,
    LiveKitAPI,
    ServerError,
    SIPGrants,
    TokenVerifier,
    VideoGrants,
    WebhookReceiver,
)
from livekit.api.twirp_client import SipCallError
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.models import DisconnectReason, ParticipantInfo
from livekit.protocol.room import (
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    UpdateRoomMetadataRequest,
)
from livekit.protocol.sip import CreateSIPParticipantRequest, SIPParticipantInfo
from livekit.protocol.webhook import WebhookEvent
from pytest_aiohttp import AiohttpServer

from common.contracts import DispatchMetadata
from sandbox import ATTR_SIP_CALL_STATUS_CODE, TEST_NUMBERS_MARKDOWN, Sandbox, scenario_for_number
from sandbox.rooms import RoomRegistry
from sandbox.scenarios import AGENT_DIES, BUSY, COMPLETED, NO_ANSWER, TRUNK_FAILURE, VOICEMAIL
from sandbox.simulation import CallSimulation
from tests.helpers import wait_for

KEY = "sandbox-test-key"
SECRET = "sandbox-test-secret-0123456789abcdef"
TRUNK = "ST_test"
WRONG_SECRET = "not-the-sandbox-secret-0123456789abcdef"


@dataclass
class WebhookSink:
    """A webhook endpoint that checks every post with the SDK's WebhookReceiver."""

    fail_first: int = 0
    attempts: list[str] = field(default_factory=list)  # event ids, retries included
    events: list[WebhookEvent] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    receiver: WebhookReceiver = field(
        default_factory=lambda: WebhookReceiver(TokenVerifier(KEY, SECRET))
    )

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        auth = request.headers.get("Authorization", "")
        try:
            event = self.receiver.receive(body.decode("utf-8"), auth)
        except Exception as exc:  # the test fails on any record here
            self.errors.append(repr(exc))
            return web.Response(status=401)
        self.attempts.append(event.id)
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503)
        self.events.append(event)
        self.raw.append((dict(request.headers), body))
        return web.Response(text="ok")

    def names(self, room: str | None = None) -> list[str]:
        return [e.event for e in self.events if room is None or e.room.name == room]


CALL_EVENTS = [
    "room_started",
    "participant_joined",
    "track_published",
    "track_unpublished",
    "participant_left",
    "room_finished",
]

SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def sink(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[WebhookSink, str]]:
    hook = WebhookSink()
    app = web.Application()
    app.router.add_post("/webhooks/livekit", hook.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    yield hook, str(server.make_url("/webhooks/livekit"))
    assert hook.errors == []


@pytest.fixture
async def make_sandbox(sink: tuple[WebhookSink, str]) -> AsyncIterator[SandboxFactory]:
    started: list[Sandbox] = []

    async def make(time_scale: float = 0.0, webhook_url: str | None = sink[1]) -> Sandbox:
        box = Sandbox(
            api_key=KEY, api_secret=SECRET, webhook_url=webhook_url, time_scale=time_scale
        )
        await box.start()
        started.append(box)
        return box

    yield make
    for box in started:
        await box.stop()


@pytest.fixture
async def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """Real time: calls placed here stay live for the whole test."""
    return await make_sandbox(time_scale=1.0)


async def place_call(api: LiveKitAPI, room: str, number: str, **extra: Any) -> SIPParticipantInfo:
    await api.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="outbound-caller", room=room, metadata="{}")
    )
    return await api.sip.create_sip_participant(
        CreateSIPParticipantRequest(
            sip_trunk_id=TRUNK,
            sip_call_to=number,
            room_name=room,
            participant_identity="callee",
            **extra,
        )
    )


async def place_call_in(api: LiveKitAPI, room: str, number: str) -> SIPParticipantInfo:
    """Dial `number` into `room`, whose dispatch was created already."""
    return await api.sip.create_sip_participant(
        CreateSIPParticipantRequest(
            sip_trunk_id=TRUNK, sip_call_to=number, room_name=room, participant_identity="callee"
        )
    )


def token(
    video: VideoGrants | None = None, sip: SIPGrants | None = None, secret: str = SECRET
) -> str:
    at = AccessToken(KEY, secret)
    if video is not None:
        at.with_grants(video)
    if sip is not None:
        at.with_sip_grants(sip)
    return at.to_jwt()


async def twirp_post(
    sandbox: Sandbox,
    path: str,
    body: bytes | dict[str, Any],
    auth: str | None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    all_headers = dict(headers or {})
    if auth is not None:
        all_headers["Authorization"] = auth
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    else:
        data = body
        all_headers.setdefault("Content-Type", "application/protobuf")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sandbox.url}/twirp/{path}", data=data, headers=all_headers) as resp,
    ):
        payload = await resp.read()
        if resp.content_type == "application/json":
            return resp.status, json.loads(payload)
        return resp.status, payload


# -- Twirp API -----------------------------------------------------------------------------------


async def test_api_flow_with_the_real_client(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str]
) -> None:
    # 100x real time: the call below rings for 0.2 s, then nobody answers.
    sandbox = await make_sandbox(time_scale=0.01)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as lkapi:
        await _api_flow(sandbox, lkapi, sink[0])


async def _api_flow(sandbox: Sandbox, lkapi: LiveKitAPI, hook: WebhookSink) -> None:
    dispatch = await lkapi.agent_dispatch.create_dispatch(
        CreateAgentDispatchRequest(agent_name="outbound-caller", room="call-a", metadata='{"x":1}')
    )
    assert dispatch.id.startswith("AD_") and dispatch.room == "call-a"
    assert dispatch.agent_name == "outbound-caller" and dispatch.metadata == '{"x":1}'
    assert "call-a" in sandbox.rooms

    info = await lkapi.sip.create_sip_participant(
        CreateSIPParticipantRequest(
            sip_trunk_id=TRUNK,
            sip_call_to="+14155550480",
            room_name="call-a",
            participant_identity="callee",
            ringing_timeout=Duration(seconds=20),
        )
    )
    assert info.participant_id.startswith("PA_") and info.sip_call_id.startswith("SCL_")
    assert (info.participant_identity, info.room_name) == ("callee", "call-a")

    rooms = (await lkapi.room.list_rooms(ListRoomsRequest(names=["call-a", "nope"]))).rooms
    assert [r.name for r in rooms] == ["call-a"]
    assert rooms[0].sid.startswith("RM_") and rooms[0].creation_time > 0
    assert rooms[0].creation_time_ms // 1000 == rooms[0].creation_time

    await sandbox.wait_idle(5)
    assert hook.names("call-a") == CALL_EVENTS
    assert (await lkapi.room.list_rooms(ListRoomsRequest())).rooms == []

    methods = [(r.service, r.method, r.authorized, r.encoding) for r in sandbox.requests]
    assert methods == [
        ("livekit.AgentDispatchService", "CreateDispatch", True, "protobuf"),
        ("livekit.SIP", "CreateSIPParticipant", True, "protobuf"),
        ("livekit.RoomService", "ListRooms", True, "protobuf"),
        ("livekit.RoomService", "ListRooms", True, "protobuf"),
    ]
    dial = sandbox.requests[1].body
    assert dial["sip_call_to"] == "+14155550480" and dial["ringing_timeout"] == "20s"
    assert sandbox.requests[1].request_id  # the SDK's idempotency key


async def test_list_participants_shows_one_agent_for_as_long_as_it_stays(
    make_sandbox: SandboxFactory,
) -> None:
    """LiveKit lists a participant once it joined, the same sid and join time each time; the
    sandbox made up a new agent participant (a new sid, joined now) at every listing, so two
    looks at one room could not be told to show the same agent."""
    sandbox = await make_sandbox(time_scale=1.0)  # real time: the call is still ringing
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await api.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="outbound-caller", room="call-same")
        )
        looks = []
        for _ in range(2):
            listed = await api.room.list_participants(ListParticipantsRequest(room="call-same"))
            looks.append([(p.sid, p.joined_at_ms, p.kind) for p in listed.participants])
            await asyncio.sleep(0.01)
        await api.room.delete_room(DeleteRoomRequest(room="call-same"))
    assert len(looks[0]) == 1 and looks[0][0][2] == ParticipantInfo.AGENT
    assert looks[1] == looks[0]


async def test_delete_room_ends_the_call(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str]
) -> None:
    sandbox = await make_sandbox(time_scale=1.0)  # real time: the call is still ringing
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-del", "+14155550480")
        await api.room.update_room_metadata(
            UpdateRoomMetadataRequest(room="call-del", metadata='{"outcome":"canceled"}')
        )
        await api.room.delete_room(DeleteRoomRequest(room="call-del"))
        assert "call-del" not in sandbox.rooms
        with pytest.raises(ServerError) as missing:
            await api.room.delete_room(DeleteRoomRequest(room="call-del"))
    assert (missing.value.code, missing.value.status) == ("not_found", 404)
    await sandbox.wait_idle(5)
    events = sink[0].events
    assert [e.event for e in events] == CALL_EVENTS
    assert events[4].participant.disconnect_reason == DisconnectReason.ROOM_DELETED
    assert events[5].room.metadata == '{"outcome":"canceled"}'


async def test_missing_grants_get_livekits_error(sandbox: Sandbox) -> None:
    path = "livekit.SIP/CreateSIPParticipant"
    dial = CreateSIPParticipantRequest(
        sip_trunk_id=TRUNK, sip_call_to="+34612345678", room_name="call-g"
    ).SerializeToString()
    # livekit-server wraps every failed grant check in twirp.Unauthenticated.
    denied = {"code": "unauthenticated", "msg": "permissions denied"}
    for auth in (
        f"Bearer {token(VideoGrants(room_admin=True, room='call-g'))}",  # no sip.call
        f"Bearer {token(VideoGrants())}",
        None,  # no token at all
    ):
        assert await twirp_post(sandbox, path, dial, auth) == (401, denied)

    dispatch = CreateAgentDispatchRequest(agent_name="a", room="call-g").SerializeToString()
    other_room = f"Bearer {token(VideoGrants(room_admin=True, room='call-other'))}"
    assert await twirp_post(
        sandbox, "livekit.AgentDispatchService/CreateDispatch", dispatch, other_room
    ) == (401, denied)

    bad = [
        (
            f"Bearer {token(sip=SIPGrants(call=True), secret=WRONG_SECRET)}",
            "invalid authorization token",
        ),
        ("Bearer not-a-jwt", "invalid authorization token"),
        (token(sip=SIPGrants(call=True)), "invalid authorization header. Must start with Bearer "),
    ]
    for auth, msg in bad:
        assert await twirp_post(sandbox, path, dial, auth) == (
            401,
            {"code": "unauthenticated", "msg": msg},
        )
    assert sandbox.rooms == {}
    assert not any(r.authorized for r in sandbox.requests)

    # The SDK parses the same error into ServerError.
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=WRONG_SECRET) as api:
        with pytest.raises(ServerError) as caught:
            await api.room.list_rooms(ListRoomsRequest())
    assert (caught.value.code, caught.value.status) == ("unauthenticated", 401)


async def test_json_bodies_and_twirp_errors(sandbox: Sandbox) -> None:
    sip = f"Bearer {token(VideoGrants(), SIPGrants(call=True))}"
    status, answer = await twirp_post(
        sandbox,
        "livekit.SIP/CreateSIPParticipant",
        {"sipTrunkId": TRUNK, "sipCallTo": "+441234567890", "room_name": "call-j", "extra": 1},
        sip,
    )
    assert status == 200
    assert answer["participant_id"].startswith("PA_") and answer["room_name"] == "call-j"
    assert answer["participant_identity"] == "sip_+441234567890"

    lister = f"Bearer {token(VideoGrants(room_list=True))}"
    status, answer = await twirp_post(sandbox, "livekit.RoomService/ListRooms", {}, lister)
    assert status == 200 and [r["name"] for r in answer["rooms"]] == ["call-j"]
    assert answer["rooms"][0]["num_participants"] == 1

    rooms = "livekit.RoomService/ListRooms"
    assert await twirp_post(
        sandbox, rooms, b"{not json", lister, {"Content-Type": "application/json"}
    ) == (
        400,
        {"code": "malformed", "msg": "the json request could not be decoded: ParseError"},
    )
    status, answer = await twirp_post(sandbox, rooms, b"\xff\xff\xff", lister)
    assert (status, answer["code"]) == (400, "malformed")
    status, answer = await twirp_post(sandbox, "livekit.RoomService/Nope", {}, lister)
    assert (status, answer["code"]) == (404, "bad_route")
    status, answer = await twirp_post(sandbox, rooms, b"", lister, {"Content-Type": "text/plain"})
    assert (status, answer["code"]) == (404, "bad_route")
    status, answer = await twirp_post(
        sandbox, "livekit.SIP/CreateSIPParticipant", {"room_name": "call-j"}, sip
    )
    assert (status, answer) == (
        400,
        {"code": "invalid_argument", "msg": "missing sip callee number"},
    )


async def test_a_web_pages_requests_are_refused(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The sandbox's key pair is public: a page on a name re-pointed at 127.0.0.1 (DNS
    rebinding) could sign, list every call's config, and end calls. Its requests carry an
    Origin, and that name as Host: refused, while the SDK's (an address as Host) are not."""
    await twirp_post(
        sandbox,
        "livekit.SIP/CreateSIPParticipant",
        {"sipTrunkId": TRUNK, "sipCallTo": "+441234567890", "room_name": "call-w"},
        f"Bearer {token(VideoGrants(), SIPGrants(call=True))}",
    )
    lister = f"Bearer {token(VideoGrants(room_list=True, room_admin=True))}"
    rooms = "livekit.RoomService/ListRooms"
    port = sandbox.url.rsplit(":", 1)[1]
    for headers in (
        {"Host": f"rebound.example:{port}", "Origin": f"http://rebound.example:{port}"},
        {"Host": f"rebound.example:{port}"},
        {"Origin": "null"},
        {"Host": "[::1"},
        # What a hosts file may lack (macOS's), and the network's DNS then answers.
        {"Host": f"localhost.localdomain:{port}"},
        {"Host": f"ip6-localhost:{port}"},
    ):
        status, answer = await twirp_post(sandbox, rooms, {}, lister, headers)
        assert (status, answer["code"]) == (403, "permission_denied"), headers
    deleted = await twirp_post(
        sandbox, "livekit.RoomService/DeleteRoom", {"room": "call-w"}, lister, {"Origin": "x"}
    )
    assert deleted[0] == 403 and "call-w" in sandbox.rooms
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        status, answer = await twirp_post(sandbox, rooms, {}, lister, {"Host": host})
        assert status == 200 and [r["name"] for r in answer["rooms"]] == ["call-w"], host
    # A body over 1 MiB: 413, not a 500 and a traceback each time.
    with caplog.at_level(logging.ERROR):
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{sandbox.url}/twirp/{rooms}",
                data=io.BytesIO(b"x" * (2 << 20)),
                headers={"Authorization": lister, "Content-Type": "application/protobuf"},
            ) as resp,
        ):
            assert resp.status == 413
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_refused_requests_are_logged_once_a_minute_per_route_and_cut(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """300 posts to unknown routes of 7 KB each wrote 4 MB of log in 0.2 s, unsigned."""
    caplog.set_level(logging.INFO, logger="sandbox")
    for n in range(20):
        status, answer = await twirp_post(
            sandbox, f"livekit.{'A' * 4000}{n}/{'B' * 3000}", {}, None
        )
        assert (status, answer["code"]) == (404, "bad_route")
    lister = f"Bearer {token(VideoGrants(room_list=True))}"
    for _ in range(3):  # another route and status: said once too
        status, _answer = await twirp_post(sandbox, "livekit.RoomService/ListRooms", {}, None)
        assert status == 401
    assert (await twirp_post(sandbox, "livekit.RoomService/ListRooms", {}, lister))[0] == 200
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox ")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("sandbox livekit.AAAA") and " -> 404 bad_route: " in lines[0]
    assert len(lines[0]) < 700
    assert lines[1].startswith("sandbox livekit.RoomService/ListRooms -> 401 unauthenticated")


async def test_same_request_id_dials_once(sandbox: Sandbox) -> None:
    dial = CreateSIPParticipantRequest(
        sip_trunk_id=TRUNK, sip_call_to="+34612345678", room_name="call-r"
    ).SerializeToString()
    auth = f"Bearer {token(VideoGrants(), SIPGrants(call=True))}"
    retry = {"X-Livekit-Request-Id": "req-1"}
    first = await twirp_post(sandbox, "livekit.SIP/CreateSIPParticipant", dial, auth, retry)
    second = await twirp_post(sandbox, "livekit.SIP/CreateSIPParticipant", dial, auth, retry)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert len(sandbox.rooms["call-r"].participants) == 1


async def test_wait_until_answered(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(time_scale=0.01)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        answered = await place_call(api, "call-w1", "+34612345678", wait_until_answered=True)
        assert answered.participant_id.startswith("PA_")
        assert sandbox.rooms["call-w1"].participants["callee"].attributes["sip.callStatus"] == (
            "active"
        )
        with pytest.raises(SipCallError) as busy:
            await place_call(api, "call-w2", "+14155550486", wait_until_answered=True)
    assert busy.value.sip_status_code == 486 and busy.value.sip_status == "Busy Here"
    assert (busy.value.code, busy.value.status) == ("resource_exhausted", 429)


# -- Calls and webhooks --------------------------------------------------------------------------


def sip_state(event: WebhookEvent) -> tuple[str, str, str | None]:
    attributes = dict(event.participant.attributes)
    return (
        DisconnectReason.Name(event.participant.disconnect_reason),
        attributes["sip.callStatus"],
        attributes.get(ATTR_SIP_CALL_STATUS_CODE),
    )


@pytest.mark.parametrize(
    ("number", "left"),
    [
        ("+1234567890", ("CLIENT_INITIATED", "hangup", None)),
        ("+14155557703", ("CLIENT_INITIATED", "hangup", None)),
        # as LiveKit's SIP service leaves a failed line: no SIP code; a dropped one (a
        # trunk's 5xx) with no reason, recorded as CLIENT_INITIATED (livekit/sip
        # pkg/sip/errors.go classifyInviteError; livekit/livekit signalhandler.go)
        ("+14155550486", ("USER_REJECTED", "ringing", None)),
        ("+14155550480", ("USER_UNAVAILABLE", "ringing", None)),
        ("+14155550503", ("CLIENT_INITIATED", "dialing", None)),
        ("+14155550999", ("CLIENT_INITIATED", "hangup", None)),
    ],
)
async def test_call_webhooks(
    make_sandbox: SandboxFactory,
    sink: tuple[WebhookSink, str],
    number: str,
    left: tuple[str, str, str | None],
) -> None:
    sandbox = await make_sandbox(time_scale=0.001)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        info = await place_call(api, "call-w", number)
    await sandbox.wait_idle(5)
    hook = sink[0]
    events = hook.events
    assert [e.event for e in events] == CALL_EVENTS
    assert len({e.id for e in events}) == len(events) and all(
        e.id.startswith("EV_") for e in events
    )
    assert all(e.created_at > 1_700_000_000 for e in events)
    assert len({e.room.sid for e in events}) == 1 and events[0].room.name == "call-w"

    joined, gone = events[1].participant, events[4].participant
    assert joined.kind == ParticipantInfo.SIP and joined.identity == "callee"
    assert joined.sid == info.participant_id and joined.state == ParticipantInfo.ACTIVE
    assert dict(joined.attributes) == {
        "sip.callStatus": "dialing",
        "sip.phoneNumber": number,
        "sip.callID": info.sip_call_id,
        "sip.trunkID": TRUNK,
    }
    assert gone.state == ParticipantInfo.DISCONNECTED and sip_state(events[4]) == left
    # What our agent writes on reaching voicemail (common.contracts.RoomMetadata).
    expected_metadata = '{"outcome":"voicemail"}' if number.endswith("0999") else ""
    assert events[5].room.metadata == expected_metadata
    assert events[5].room.num_participants == 0
    # Track events name only the participant, as LiveKit's do.
    published, unpublished = events[2], events[3]
    assert published.track.sid == unpublished.track.sid and published.track.sid.startswith("TR_")
    assert published.participant.identity == "callee" and not published.participant.attributes

    headers, body = hook.raw[0]
    assert headers["Content-Type"] == "application/webhook+json"
    assert not headers["Authorization"].startswith("Bearer ")
    raw = json.loads(body)
    assert raw["event"] == "room_started" and isinstance(raw["createdAt"], str)
    assert "creationTime" in raw["room"] and "creation_time" not in raw["room"]
    assert json.loads(hook.raw[4][1])["participant"]["disconnectReason"] == left[0]


async def test_webhooks_are_retried_with_the_same_id(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str]
) -> None:
    hook = sink[0]
    hook.fail_first = 2
    sandbox = await make_sandbox(time_scale=0.001)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-retry", "+14155550486")
    await sandbox.wait_idle(5)
    first_id = hook.events[0].id
    assert hook.attempts[:3] == [first_id] * 3
    assert hook.names() == CALL_EVENTS
    assert len(hook.attempts) == len(CALL_EVENTS) + 2


async def test_livekit_webhooks_keep_livekits_five_attempts(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str]
) -> None:
    hook = sink[0]
    hook.fail_first = 1000
    sandbox = await make_sandbox(time_scale=0.001)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-down", "+14155550486")
    await sandbox.wait_idle(5)
    assert len(hook.attempts) == 5 * len(CALL_EVENTS)
    assert sandbox.webhooks_dropped == len(CALL_EVENTS)


async def test_retries_are_debug_lines_and_giving_up_one_warning(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every failed attempt was an INFO line: 84 lines for 10 calls in a 17 s outage."""
    caplog.set_level(logging.DEBUG, logger="sandbox")
    sink[0].fail_first = 5 + 2  # the first event is given up, the second gets through
    sandbox = await make_sandbox(time_scale=0.001)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-log", "+14155550486")
    await sandbox.wait_idle(5)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "sandbox.webhooks"]
    shown = [(level, line) for level, line in lines if level >= logging.INFO]
    assert len(shown) == 1 and shown[0][0] == logging.WARNING
    assert re.fullmatch(
        r"sandbox webhook room_started \S+ dropped after 5 attempts over [0-9.]+ s \(last: HTTP"
        r" 503\)",
        shown[0][1],
    )
    retried = [line for level, line in lines if level == logging.DEBUG and "failed" in line]
    assert len(retried) == 4 + 2


async def test_the_agents_reports_outlast_an_outage_as_the_agents_do(
    make_sandbox: SandboxFactory, aiohttp_server: AiohttpServer
) -> None:
    """The simulated agent retries its reports with the agent's own policy (0.5 s doubling,
    for up to 4 minutes), in real time. With LiveKit's 5 attempts, scaled by the time scale
    (0.15 s in all at 0.01, 15 s at 1), an outage of the server's database a little longer
    lost a call's `answered` and `final` reports."""
    loop = asyncio.get_running_loop()
    down_until = loop.time() + 2.0
    received: list[dict[str, Any]] = []
    posts: list[int] = []

    async def reports(request: web.Request) -> web.Response:
        if loop.time() < down_until:
            return web.json_response({"error": "calls database unavailable"}, status=503)
        doc = await request.json()
        posts.append(len(doc) if isinstance(doc, list) else 1)
        received.extend(doc if isinstance(doc, list) else [doc])
        if isinstance(doc, list):  # as the server answers
            results = [{"seq": report["seq"], "result": "applied"} for report in doc]
            return web.json_response({"status": "success", "results": results})
        return web.json_response({"status": "success", "result": "applied"})

    app = web.Application()
    app.router.add_post("/agent/reports", reports)
    server = await aiohttp_server(app, host="127.0.0.1")
    sandbox = await make_sandbox(time_scale=0.01)
    metadata = DispatchMetadata(
        call_id="call-out", report_url=str(server.make_url("/agent/reports"))
    )
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await api.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(
                agent_name="outbound-caller", room="call-out", metadata=metadata.to_json()
            )
        )
        await place_call_in(api, "call-out", "+34612345678")
    await sandbox.wait_idle(10)
    kinds = [report["kind"] for report in received]
    assert kinds[0] == "answered" and kinds[-1] == "final"
    assert [report["seq"] for report in received] == list(range(len(received)))
    assert sandbox.reports_dropped == 0 and sandbox.reports_delivered == len(received)
    # Sent as the agent sends them: what queued during the outage went in one POST.
    assert len(posts) < len(received) and max(posts) > 1


async def test_webhook_url_can_be_set_after_start(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str]
) -> None:
    sandbox = await make_sandbox(time_scale=0.001, webhook_url=None)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-before", "+14155550503")
        await sandbox.wait_idle(5)
        sandbox.webhook_url = sink[1]
        await place_call(api, "call-after", "+14155550503")
    await sandbox.wait_idle(5)
    assert {e.room.name for e in sink[0].events} == {"call-after"}


async def test_unreachable_webhook_url_gives_up(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(time_scale=0.001, webhook_url="http://127.0.0.1:9/nowhere")
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-x", "+14155550503")
    await sandbox.wait_idle(5)
    assert sandbox.rooms == {}


async def test_stop_is_idempotent_and_cancels_calls(make_sandbox: SandboxFactory) -> None:
    sandbox = await make_sandbox(time_scale=1.0)
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        await place_call(api, "call-s", "+34612345678")
    await sandbox.stop()
    await sandbox.stop()
    await sandbox.wait_idle(1)


# -- Scenarios -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "scenario"),
    [
        ("+1234567890", COMPLETED),
        ("+34612345678", COMPLETED),
        ("+441234567890", COMPLETED),
        ("+1 415 555 0486", BUSY),
        ("+14155550480", NO_ANSWER),
        ("+14155550503", TRUNK_FAILURE),
        ("+14155550999", VOICEMAIL),
        ("+14155550666", AGENT_DIES),
    ],
)
def test_scenario_for_number(number: str, scenario: object) -> None:
    assert scenario_for_number(number) == scenario


def test_hang_up_after_nn_seconds() -> None:
    scenario = scenario_for_number("+14155557742")
    assert (scenario.outcome, scenario.talk_s) == ("completed", 42.0)
    assert "`0486`" in TEST_NUMBERS_MARKDOWN and "`77NN`" in TEST_NUMBERS_MARKDOWN


@pytest.mark.parametrize(
    ("number", "ringing_timeout", "max_duration", "ends_at", "reason"),
    [
        ("+34612345678", 30.0, None, 3 + 10 + 1, DisconnectReason.CLIENT_INITIATED),
        ("+34612345678", 30.0, 7.0, 7 + 1, DisconnectReason.CLIENT_INITIATED),
        ("+34612345678", 2.0, None, 2 + 1, DisconnectReason.USER_UNAVAILABLE),
        ("+14155550480", 45.0, None, 45 + 1, DisconnectReason.USER_UNAVAILABLE),
        ("+14155557705", 30.0, None, 3 + 5 + 1, DisconnectReason.CLIENT_INITIATED),
    ],
)
async def test_call_timeline(
    number: str,
    ringing_timeout: float,
    max_duration: float | None,
    ends_at: float,
    reason: DisconnectReason,
) -> None:
    """Simulated seconds from joining to room_finished, including the 1 s departure delay."""
    events: list[WebhookEvent] = []
    registry = RoomRegistry(lambda _sid, event: events.append(event))
    room, _ = registry.get_or_create("call-t")
    registry.join(room, ParticipantInfo(identity="callee", kind=ParticipantInfo.SIP))
    simulation = CallSimulation(
        registry=registry,
        room=room,
        identity="callee",
        call_id="SCL_test",
        number=number,
        scenario=scenario_for_number(number),
        ringing_timeout_s=ringing_timeout,
        max_call_duration_s=max_duration,
        time_scale=0.0,
    )
    await simulation.start()
    assert simulation.elapsed_s == ends_at
    assert [e.event for e in events][-2:] == ["participant_left", "room_finished"]
    assert events[-2].participant.disconnect_reason == reason
    answer = simulation.answered.result()
    assert (answer is None) == (reason == DisconnectReason.CLIENT_INITIATED)


async def test_the_agent_ends_a_dispatched_room_no_callee_joins(
    make_sandbox: SandboxFactory, sink: tuple[WebhookSink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that died between its dispatch and its dial: our agent waits the ringing
    timeout and CALLEE_WAIT_GRACE_S for the callee, then deletes the room (room_finished);
    a room that is dialled, or not a call of ours, is left alone."""
    monkeypatch.setattr("sandbox.services.MIN_CALLEE_WAIT_S", 0.3)
    sandbox = await make_sandbox(time_scale=0.01)  # the wait: (1 + 15) * 0.01 s, at least 0.3
    ours = DispatchMetadata(call_id="call-lone", ringing_timeout_s=1).to_json()
    dialled = DispatchMetadata(call_id="call-dialled", ringing_timeout_s=1).to_json()
    async with LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET) as api:
        for room, metadata in (("call-lone", ours), ("call-dialled", dialled), ("other", "{}")):
            dispatch = CreateAgentDispatchRequest(agent_name="caller", room=room, metadata=metadata)
            await api.agent_dispatch.create_dispatch(dispatch)
        await place_call_in(api, "call-dialled", "+14155557799")  # answered, 99 s (~1 s here)

        async def lone_ended() -> bool:  # 0.3 s on (a look 0.6 s on could come after the
            # dialled call's end too, 0.93 s on, on a loaded machine)
            return "call-lone" not in sandbox.rooms

        await wait_for(lone_ended, timeout=5)
        assert set(sandbox.rooms) == {"call-dialled", "other"}
        await sandbox.wait_idle(5)
    assert sink[0].names("call-lone") == ["room_started", "room_finished"]
    assert sink[0].names("call-dialled") == CALL_EVENTS  # its whole call, not cut short
    assert "other" in sandbox.rooms and sink[0].names("other") == ["room_started"]
