"""POST /webhooks/livekit with events signed the way LiveKit signs them (livekit-api's
AccessToken.with_sha256), forged variants, retries, and out-of-order delivery."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import hashlib
import io
import json
import logging
import secrets
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.protobuf.json_format import MessageToJson
from livekit.api import AccessToken
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from common.calls import service
from common.calls.outcomes import CALLEE_SILENT
from common.calls.service import AGENT_GONE
from common.contracts import OUTCOME_CALLEE_SILENT, OUTCOME_FAILED, RoomMetadata
from common.settings import DEV_API_KEY, DEV_API_SECRET
from handlers.keys import CALLS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import FakeClock, config_forgets, wait_for

Client = TestClient[Any, Any]
PATH = "/webhooks/livekit"
CALL = {"phone_number": "+1234567890", "name": "Test User", "language": "en", "emotion": "Calm"}


def event_json(kind: str, room: str, **participant: Any) -> bytes:
    event = WebhookEvent(
        event=kind,
        id=f"EV_{secrets.token_hex(6)}",
        created_at=1_700_000_000,
        room=models.Room(name=room, sid="RM_test"),
    )
    if participant:
        event.participant.CopyFrom(
            models.ParticipantInfo(
                identity=participant.get("identity", f"sip-{room}"),
                kind=participant.get("participant_kind", models.ParticipantInfo.Kind.SIP),
                attributes=participant.get("attributes", {}),
                disconnect_reason=participant.get("reason", 0),
            )
        )
    if "metadata" in participant:
        event.room.metadata = participant["metadata"]
    return MessageToJson(event).encode()


def sign(body: bytes, key: str = DEV_API_KEY, secret: str = DEV_API_SECRET) -> str:
    """As LiveKit signs a webhook: valid for 5 minutes (livekit-api's default is 6 h, which
    the server refuses: further ahead than WEBHOOK_MAX_AHEAD)."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = AccessToken(key, secret).with_ttl(datetime.timedelta(minutes=5))
    return token.with_sha256(digest).to_jwt()


async def quiet_app(start_app: AppFactory) -> Client:
    """The real app whose sandbox posts no webhooks of its own: the test posts them all."""
    client = await start_app(sandbox_time_scale=100.0)
    client.app[SANDBOX].webhook_url = None
    return client


async def post(client: Client, body: bytes, auth: str | None) -> int:
    headers = {"Content-Type": "application/webhook+json"}
    if auth is not None:
        headers["Authorization"] = auth
    resp = await client.post(PATH, data=io.BytesIO(body), headers=headers)
    return resp.status


async def line_joins(client: Client, call_id: str) -> None:
    """LiveKit's SIP participant joins the call's room, as it does before it dials: the
    callee's line was there (a room that finishes without it rang nobody)."""
    body = event_json("participant_joined", call_id, attributes={"sip.callStatus": "dialing"})
    assert await post(client, body, sign(body)) == 200


async def place(client: Client, number: str = "+1234567890") -> str:
    resp = await client.post("/calls/outbound", json=dict(CALL, phone_number=number))
    assert resp.status == 200
    call_id: str = (await resp.json())["call_id"]
    return call_id


async def timeline(client: Client, call_id: str) -> list[dict[str, Any]]:
    call = await (await client.get(f"/calls/{call_id}")).json()
    entries: list[dict[str, Any]] = call["timeline"]
    return entries


def _alg_none(body: bytes) -> str:
    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    claims = {"iss": DEV_API_KEY, "exp": 4_000_000_000, "sha256": digest}
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."


def _expired(body: bytes) -> str:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return (
        AccessToken(DEV_API_KEY, DEV_API_SECRET)
        .with_ttl(datetime.timedelta(hours=-2))
        .with_sha256(digest)
        .to_jwt()
    )


def _exp_decades_ahead(body: bytes) -> str:
    """Valid but for its exp, 30 years ahead: TokenVerifier took it, LiveKit never signs one."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = AccessToken(DEV_API_KEY, DEV_API_SECRET).with_ttl(datetime.timedelta(days=30 * 365))
    return token.with_sha256(digest).to_jwt()


FORGERIES = {
    "no header": lambda body: None,
    "garbage header": lambda body: "Bearer not.a.jwt",
    "other secret": lambda body: sign(body, secret="another-secret-that-is-long-enough-000000"),
    "other key id": lambda body: sign(body, key="APIotherkey"),
    "body changed by one byte": lambda body: sign(body[:-2] + b" }"),
    "expired": _expired,
    "alg none": _alg_none,
    "exp decades ahead": _exp_decades_ahead,
}


@pytest.mark.parametrize("forgery", list(FORGERIES), ids=list(FORGERIES))
async def test_forged_webhooks_401_and_no_change(
    start_app: AppFactory, forgery: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    before = await timeline(client, call_id)
    body = event_json("room_finished", call_id)
    auth = FORGERIES[forgery](body)
    with caplog.at_level(logging.WARNING):
        assert await post(client, body, auth) == 401
    assert await timeline(client, call_id) == before
    assert client.app[CALLS].webhook_heard_at is None  # no LiveKit webhook reached us
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("webhook refused" in w for w in warnings)
    if forgery == "exp decades ahead":  # the line says why
        assert any("token expires more than 1 h ahead" in w for w in warnings), warnings
    if auth:
        assert all(auth.removeprefix("Bearer ") not in w for w in caplog.text.splitlines())


async def test_the_public_sandbox_secret_signs_for_this_machine_only(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed with the embedded sandbox's secret (it is in the source), a webhook from
    another machine is refused (403) and changes nothing; from this one it is applied."""
    from handlers import http

    client = await quiet_app(start_app)
    call_id = await place(client)
    before = await timeline(client, call_id)
    body = event_json("room_finished", call_id)
    monkeypatch.setattr(http, "_from_this_machine", lambda _request: False)
    assert await post(client, body, sign(body)) == 403
    assert await timeline(client, call_id) == before
    monkeypatch.undo()
    assert await post(client, body, sign(body)) == 200
    assert await timeline(client, call_id) != before


async def test_bearer_prefix_accepted_and_retries_deduplicated(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    body = event_json("participant_joined", call_id, attributes={"sip.callStatus": "ringing"})
    assert await post(client, body, sign(body)) == 200
    for _ in range(9):
        assert await post(client, body, "Bearer " + sign(body)) == 200
    entries = [e for e in await timeline(client, call_id) if e["event"] == "participant_joined"]
    assert len(entries) == 1 and entries[0]["to"] == "ringing"


async def test_oversized_and_non_json_bodies(client: Client) -> None:
    big = b"{" + b" " * (1024 * 1024) + b"}"
    assert await post(client, big, sign(big)) == 413
    junk = b"this is not json"
    assert await post(client, junk, sign(junk)) == 400


async def test_an_event_id_longer_than_livekits_is_malformed_on_each_database(
    start_app_on_each_database: AppFactory,
) -> None:
    """The id is kept under a unique index, whose keys PostgreSQL holds up to 2,704 bytes: a
    longer id was a 503 ("calls database unavailable") that LiveKit retries, while the
    database was fine, and taken on SQLite. Now it is the same 400 on both, nothing stored."""
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    joined = json.loads(
        event_json("participant_joined", call_id, attributes={"sip.callStatus": "active"})
    )
    joined["id"] = "EV_" + secrets.token_urlsafe(3000)
    body = json.dumps(joined).encode()
    assert await post(client, body, sign(body)) == 400
    assert not any(entry["event_id"] == joined["id"] for entry in await timeline(client, call_id))
    joined["id"] = "EV_" + "x" * 253  # 256 characters: taken
    body = json.dumps(joined).encode()
    assert await post(client, body, sign(body)) == 200


async def test_unknown_rooms_and_event_types_are_ignored(client: Client) -> None:
    for body in (
        event_json("room_finished", "someone-elses-room"),
        event_json("egress_started", "call-000000000000"),
        event_json("room_finished", "call-000000000000"),
    ):
        assert await post(client, body, sign(body)) == 200
    heard = client.app[CALLS].webhook_heard_at  # LiveKit's webhooks do reach us
    assert heard is not None and abs(heard - client.app[CALLS].clock()) < 5


async def test_out_of_order_events_settle_correctly(start_app: AppFactory, tmp_path: Path) -> None:
    client = await quiet_app(start_app)
    busy = await place(client)
    completed = await place(client)
    rejected = int(models.DisconnectReason.USER_REJECTED)
    hung_up = int(models.DisconnectReason.CLIENT_INITIATED)
    events = [
        # busy: left (rejected) arrives before joined
        event_json(
            "participant_left", busy, attributes={"sip.callStatus": "ringing"}, reason=rejected
        ),
        event_json("participant_joined", busy, attributes={"sip.callStatus": "dialing"}),
        event_json("room_finished", busy),
        # completed: left arrives before the answer evidence
        event_json(
            "participant_left", completed, attributes={"sip.callStatus": "hangup"}, reason=hung_up
        ),
        event_json("track_published", completed, attributes={"sip.callStatus": "active"}),
        event_json("room_finished", completed),
        event_json("participant_joined", completed, attributes={"sip.callStatus": "ringing"}),
    ]
    from tests.integration.test_FG_no_agent_short_call import agent_joins

    await agent_joins(client, completed)  # somebody talked to the callee
    for body in events:
        assert await post(client, body, sign(body)) == 200
    assert (await (await client.get(f"/calls/{busy}")).json())["status"] == "busy"
    shown = await (await client.get(f"/calls/{completed}")).json()
    assert shown["status"] == "completed" and shown["answered_at"] is not None
    await config_forgets(tmp_path / "config.json", busy, completed)  # room_finished removes them


def _created(body: bytes, at: int) -> bytes:
    event = json.loads(body)
    event["createdAt"] = str(at)
    return json.dumps(event).encode()


async def test_a_late_event_from_before_a_calls_end_does_not_say_its_room_is_alive(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A participant_joined retried (or reordered) after the call's participant_left settled
    it busy happened before that end: the log said, at WARNING, "call ... is busy but its
    room is alive (participant_joined); ending it", of a room nobody had seen alive since.
    It says the event came late and the call stands. One that happened after the call's end
    (a dial LiveKit made after it was given up) is still said, and its room ended."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    now = int(client.app[CALLS].clock())
    rejected = int(models.DisconnectReason.USER_REJECTED)
    left = event_json(
        "participant_left", call_id, attributes={"sip.callStatus": "ringing"}, reason=rejected
    )
    left = _created(left, now)
    assert await post(client, left, sign(left)) == 200
    assert (await (await client.get(f"/calls/{call_id}")).json())["status"] == "busy"
    joined = event_json("participant_joined", call_id, attributes={"sip.callStatus": "dialing"})
    joined = _created(joined, now - 5)
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        assert await post(client, joined, sign(joined)) == 200
    assert "room is alive" not in caplog.text
    assert f"call {call_id}: its participant_joined came late, after its end (busy)" in (
        caplog.text
    )
    started = _created(event_json("room_started", call_id), now + 2)
    with caplog.at_level(logging.WARNING, logger="common.calls.service"):
        assert await post(client, started, sign(started)) == 200
    assert f"call {call_id} is busy but its room is alive (room_started); ending it" in (
        caplog.text
    )
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert (shown["status"], shown["reason"]) == ("busy", "user_rejected")


async def test_database_failure_answers_503(client: Client) -> None:
    from handlers.keys import STORE

    call_id = await place(client)
    await client.app[STORE].close()
    body = event_json("room_finished", call_id)
    assert await post(client, body, sign(body)) == 503


async def test_an_outage_is_one_access_line_a_minute_per_route(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """While the database is down, LiveKit retries every webhook and each gets a 503: one
    access line per attempt flooded the log (about 20 lines per live call per outage)."""
    from handlers.keys import STORE

    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    client = await quiet_app(start_app)
    call_id = await place(client)
    await client.app[STORE].close()
    for _ in range(5):
        body = event_json("participant_joined", call_id)
        assert await post(client, body, sign(body)) == 503
    for _ in range(3):  # unsigned posts (anyone's, by the thousand: 24 MB/s of log): the same
        assert (await client.post(PATH, data=b"{}", headers={"Authorization": "x"})).status == 401
    await client.get("/healthz")  # a line is written once its answer has gone out
    await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len([line for line in lines if '" 503 ' in line]) == 1, lines
    assert len([line for line in lines if '" 401 ' in line]) == 1, lines
    refused = [r for r in caplog.records if r.getMessage().startswith("webhook refused from")]
    assert len(refused) == 1  # why, once a minute too


async def test_a_burst_of_forged_webhooks_is_counted_once_it_stops(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Five forged webhooks, then none: the log said the first one and never the four held
    back (only a later one of the kind, a minute on, carried the count): a burst of
    thousands read as one. Once its minute is over, or as the server stops, the count is
    said."""
    from handlers.http import say_refusals_held_back
    from handlers.keys import REFUSALS

    caplog.set_level(logging.INFO)
    client = await quiet_app(start_app)
    clock = FakeClock(1000.0)
    client.app[REFUSALS].clock = clock
    body = event_json("room_finished", "call-000000000000")
    for _ in range(5):
        assert await post(client, body, FORGERIES["other secret"](body)) == 401
    await client.get("/healthz")  # a line is written once its answer has gone out
    await asyncio.sleep(0.05)
    said = "4 more like 'webhook: token rejected (InvalidSignatureError)' in the last"
    say_refusals_held_back(client.app)
    assert said not in caplog.text  # its minute is not over
    clock.advance(61.0)
    say_refusals_held_back(client.app)
    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.http"]
    assert any(line.startswith(said) for line in lines), lines
    assert any(line.startswith("4 more like '/webhooks/livekit 401'") for line in lines), lines
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "handlers.http")
    caplog.clear()
    say_refusals_held_back(client.app)  # said once
    assert not [r for r in caplog.records if r.name == "handlers.http"]
    # At the stop, what its minute had not yet seen
    assert await post(client, body, FORGERIES["other secret"](body)) == 401
    assert await post(client, body, FORGERIES["other secret"](body)) == 401
    await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "handlers.http"]
    assert any(
        line.startswith("2 more like 'webhook: token rejected (InvalidSignatureError)'")
        for line in lines
    ), lines


async def test_unsigned_posts_on_new_connections_cannot_fill_the_log(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Unsigned posts of 8 KB URLs and headers wrote 24 KB of log each, 24 MB/s from ten
    clients with no credentials: the once-a-minute count was per connection, and LiveKit,
    the agents and such clients open a new one each time."""
    import aiohttp

    caplog.set_level(logging.INFO)
    client = await quiet_app(start_app)
    base = str(client.make_url(""))
    long_agent = "A" * 8000
    for _ in range(5):
        async with aiohttp.ClientSession() as session:  # a connection of its own, each
            url = f"{base}{PATH}?{'q' * 6000}"
            headers = {"Authorization": "x", "User-Agent": long_agent, "Referer": long_agent}
            async with session.post(url, data=b"{}", headers=headers) as resp:
                assert resp.status == 401
    quoted = ("a" * 299 + '"') * 25  # a quote every 299 characters got past a cut
    async with aiohttp.ClientSession() as session:
        headers = {"User-Agent": quoted, "Referer": quoted}
        async with session.get(f"{base}/{'p' * 7000}", headers=headers) as resp:
            assert resp.status == 404
    await client.get("/healthz")
    await asyncio.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if '" 401 ' in line]) == 1, lines
    assert len([line for line in lines if line.startswith("webhook refused from")]) == 1
    assert len([line for line in lines if '" 404 ' in line]) == 1  # a client's: each one
    assert max(len(line) for line in lines) < 1200  # each field cut at 300 characters
    assert sum(len(line) for line in lines) < 8000  # was 6 x 22 KB


async def test_an_agents_failure_on_the_room_is_the_calls_reason(start_app: AppFactory) -> None:
    """What the agent records on the room before hanging up on its own failure (a provider's
    error): the unanswered call is `failed`, not `no_answer`; the answered one stays
    `completed`; both say why."""
    client = await quiet_app(start_app)
    ringing, answered = await place(client), await place(client)
    reason = "the agent's session failed: tts APIStatusError 401"
    metadata = RoomMetadata.with_outcome("", OUTCOME_FAILED, reason)
    deleted = int(models.DisconnectReason.ROOM_DELETED)
    events = [
        event_json("participant_joined", ringing, attributes={"sip.callStatus": "ringing"}),
        event_json(
            "participant_left", ringing, attributes={"sip.callStatus": "ringing"}, reason=deleted
        ),
        event_json("room_finished", ringing, metadata=metadata),
        event_json("participant_joined", answered, attributes={"sip.callStatus": "active"}),
        event_json(
            "participant_left", answered, attributes={"sip.callStatus": "active"}, reason=deleted
        ),
        event_json("room_finished", answered, metadata=metadata),
    ]
    for body in events:
        assert await post(client, body, sign(body)) == 200
    shown = await (await client.get(f"/calls/{ringing}")).json()
    assert (shown["status"], shown["reason"]) == ("failed", reason)
    shown = await (await client.get(f"/calls/{answered}")).json()
    assert (shown["status"], shown["reason"]) == ("completed", reason)


async def test_a_call_the_agent_ended_on_the_callees_silence_says_so(
    start_app: AppFactory,
) -> None:
    """The agent ended the answered call because the callee said nothing (asked whether they
    were there): `completed` as before, its reason saying so; a call that ended well has none,
    and the two read alike, a campaign unable to tell a call nobody spoke on."""
    client = await quiet_app(start_app)
    silent, talked = await place(client), await place(client)
    deleted = int(models.DisconnectReason.ROOM_DELETED)
    for call_id, metadata in (
        (silent, RoomMetadata.with_outcome("", OUTCOME_CALLEE_SILENT)),
        (talked, ""),
    ):
        events = [
            event_json("participant_joined", call_id, attributes={"sip.callStatus": "active"}),
            agent_event("participant_joined", call_id),
            event_json(
                "participant_left", call_id, attributes={"sip.callStatus": "active"}, reason=deleted
            ),
            event_json("room_finished", call_id, metadata=metadata),
        ]
        for body in events:
            assert await post(client, body, sign(body)) == 200
    shown = await (await client.get(f"/calls/{silent}")).json()
    assert (shown["status"], shown["reason"]) == ("completed", CALLEE_SILENT)
    shown = await (await client.get(f"/calls/{talked}")).json()
    assert (shown["status"], shown["reason"]) == ("completed", None)


def agent_event(
    kind: str, room: str, reason: int = 0, name: str | None = "outbound-caller"
) -> bytes:
    """The agent's participant's `kind` event (participant_joined, participant_left);
    livekit-agents names it (`lk.agent.name`: AGENT_NAME)."""
    agent = models.ParticipantInfo.Kind.AGENT
    named = {} if name is None else {"lk.agent.name": name}
    return event_json(
        kind, room, participant_kind=agent, identity="agent", reason=reason, attributes=named
    )


def agent_left(room: str, reason: int, name: str | None = "outbound-caller") -> bytes:
    """The agent's participant left."""
    return agent_event("participant_left", room, reason, name)


@pytest.mark.parametrize(
    ("then", "status", "reason"),
    [
        # its process died: nothing else comes, the server ends the call
        ([], "completed", AGENT_GONE),
        # it left as its room was deleted: the call's end, which room_finished settles
        (["deleted"], "in_progress", None),
        # it left, then hung up (deleted the room) within the grace: room_finished settles it
        (["room_finished"], "completed", None),
        # the callee hung up first: the room ends by itself (room_finished settles it)
        (["callee_left"], "in_progress", None),
    ],
)
async def test_an_agent_leaving_a_live_call_ends_it_unless_the_call_ends_anyway(
    start_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    then: list[str],
    status: str,
    reason: str | None,
) -> None:
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    client = await quiet_app(start_app)
    call_id = await place(client)
    active = {"sip.callStatus": "active"}
    left = int(models.DisconnectReason.CLIENT_INITIATED)
    events = [event_json("participant_joined", call_id, attributes=active)]
    if "callee_left" in then:
        events.append(event_json("participant_left", call_id, attributes=active, reason=left))
    deleted = "deleted" in then
    events.append(agent_left(call_id, models.DisconnectReason.ROOM_DELETED if deleted else left))
    client.app[SANDBOX].rooms[call_id].agent_present = False  # LiveKit lists it no more
    if "room_finished" in then:
        events.append(event_json("room_finished", call_id))
    for body in events:
        assert await post(client, body, sign(body)) == 200

    async def shown_now() -> dict[str, Any]:
        call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
        return call

    if reason == AGENT_GONE:  # settled once the grace is over
        await wait_for(lambda: _is_final(shown_now()), timeout=10)
    else:
        await asyncio.sleep(0.6)  # well past the grace: nothing done
    shown = await shown_now()
    assert (shown["status"], shown["reason"]) == (status, reason)
    gone = [e for e in shown["timeline"] if e["event"] == "agent_gone"]
    assert len(gone) == (1 if reason == AGENT_GONE else 0)


async def test_a_second_agent_leaving_does_not_end_the_call_the_first_is_on(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiveKit dispatched the call twice: the second job leaves at once (agent/worker.py),
    and its participant_left was taken for the call's agent dying: 5 s later the server
    ended the call ("its agent left the call") and deleted its room while the first agent
    talked with the callee. Now LiveKit is asked first, and lists the first agent there."""
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    client = await quiet_app(start_app)
    call_id = await place(client)
    assert client.app[SANDBOX].rooms[call_id].agent_present  # the first agent stays
    active = {"sip.callStatus": "active"}
    left = int(models.DisconnectReason.CLIENT_INITIATED)
    for body in [
        event_json("participant_joined", call_id, attributes=active),
        agent_left(call_id, left),
    ]:
        assert await post(client, body, sign(body)) == 200
    await asyncio.sleep(0.6)  # well past the grace
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert (shown["status"], shown["reason"]) == ("in_progress", None)
    assert not [e for e in shown["timeline"] if e["event"] == "agent_gone"]
    assert call_id in client.app[SANDBOX].rooms  # the line is still up


async def test_an_agent_of_another_name_left_in_the_room_is_not_the_calls_agent(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent the project dispatches to every room (a recorder, named otherwise than
    AGENT_NAME) stays when the call's agent dies: it was counted as the call's agent, and
    the callee was left in silence until max_duration_s. Only an agent of AGENT_NAME counts."""
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    client = await quiet_app(start_app)
    call_id = await place(client)
    room = client.app[SANDBOX].rooms[call_id]
    room.agent_present = False  # the call's agent died
    room.participants["agent-recorder"] = models.ParticipantInfo(
        identity="agent-recorder",
        kind=models.ParticipantInfo.Kind.AGENT,
        attributes={"lk.agent.name": "recorder"},
    )
    active = {"sip.callStatus": "active"}
    left = int(models.DisconnectReason.CLIENT_INITIATED)
    for body in [
        event_json("participant_joined", call_id, attributes=active),
        agent_left(call_id, left),
    ]:
        assert await post(client, body, sign(body)) == 200

    async def shown_now() -> dict[str, Any]:
        call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
        return call

    await wait_for(lambda: _is_final(shown_now()), timeout=10)
    shown = await shown_now()
    assert (shown["status"], shown["reason"]) == ("completed", AGENT_GONE)


async def test_an_agent_that_gives_no_name_is_not_the_calls_agent(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """livekit-agents names every job's participant (`lk.agent.name`); another program's
    agent that gives no name was counted as the call's: still in the room when the call's
    agent died, it kept the call live, its callee in silence until max_duration_s; and its
    own leaving was taken for the call's agent dying."""
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    client = await quiet_app(start_app)
    call_id = await place(client)
    room = client.app[SANDBOX].rooms[call_id]
    room.agent_present = False  # the call's agent died
    room.participants["agent-other"] = models.ParticipantInfo(
        identity="agent-other", kind=models.ParticipantInfo.Kind.AGENT
    )
    active = {"sip.callStatus": "active"}
    left = int(models.DisconnectReason.CLIENT_INITIATED)
    for body in [
        event_json("participant_joined", call_id, attributes=active),
        agent_left(call_id, left),
    ]:
        assert await post(client, body, sign(body)) == 200

    async def shown_now() -> dict[str, Any]:
        call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
        return call

    await wait_for(lambda: _is_final(shown_now()), timeout=10)
    shown = await shown_now()
    assert (shown["status"], shown["reason"]) == ("completed", AGENT_GONE)

    # Its leaving is not the call's agent dying: a live call goes on.
    other = await place(client)
    client.app[SANDBOX].rooms[other].agent_present = False
    for body in [
        event_json("participant_joined", other, attributes=active),
        agent_left(other, left, name=None),
    ]:
        assert await post(client, body, sign(body)) == 200
    await asyncio.sleep(0.6)  # well past the grace
    still = await (await client.get(f"/calls/{other}")).json()
    assert still["status"] == "in_progress", still


async def test_a_callee_leaving_as_the_agent_gone_grace_ends_is_not_overwritten(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent-gone check's look at the call comes before its transaction: a callee who
    left in between (here: the look sees the call as it was before) is the one who ended the
    call, and the decision, made on the row its transaction holds, leaves the call alone."""
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    client = await quiet_app(start_app)
    call_id = await place(client)
    store = client.app[CALLS].store
    looked_before_the_callee_left = store.get_call

    async def stale_look(call_id: str, *, with_timeline: bool = True) -> Any:
        call = await looked_before_the_callee_left(call_id, with_timeline=with_timeline)
        return None if call is None else dataclasses.replace(call, callee_left_at=None)

    monkeypatch.setattr(store, "get_call", stale_look)
    active = {"sip.callStatus": "active"}
    left = int(models.DisconnectReason.CLIENT_INITIATED)
    events = [
        event_json("participant_joined", call_id, attributes=active),
        agent_left(call_id, left),
        event_json("participant_left", call_id, attributes=active, reason=left),
    ]
    for body in events:
        assert await post(client, body, sign(body)) == 200
    await asyncio.sleep(0.6)  # well past the grace
    monkeypatch.undo()
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert (shown["status"], shown["reason"], shown["ended_by"]) == ("in_progress", None, None)
    assert not [e for e in shown["timeline"] if e["event"] == "agent_gone"]


async def _is_final(shown: Awaitable[dict[str, Any]]) -> bool:
    return (await shown)["status"] in ("completed", "failed", "voicemail")


async def test_a_webhook_body_refused_for_its_encoding_is_not_counted_too_large(
    start_app: AppFactory,
) -> None:
    """Every refusal of the body's read (a 415 for its Content-Encoding, a 408, a 501) was
    counted webhooks_total{result="too_large"}, sending an operator after a size limit."""
    client = await quiet_app(start_app)
    body = b"{}"
    resp = await client.post(
        PATH,
        data=body,
        headers={"Authorization": sign(body), "Content-Encoding": "x-gzip"},
    )
    assert resp.status == 415
    metrics = await (await client.get("/metrics")).text()
    assert 'webhooks_total{result="unreadable"} 1.0' in metrics
    assert 'webhooks_total{result="too_large"} 0.0' in metrics  # there from the start, at 0
