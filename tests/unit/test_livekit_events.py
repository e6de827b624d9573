"""Reading LiveKit's webhook events from the JSON body: the fields we use, checked as strictly
as protobuf's parser checks them, and the same event whichever way protobuf writes it."""

from __future__ import annotations

import json

import pytest
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models, webhook

from common.livekit.events import EventParticipant, MalformedEvent, RoomEvent

ROOM = "call-0123456789ab"


def full_event() -> webhook.WebhookEvent:
    return webhook.WebhookEvent(
        event="participant_left",
        id="EV_1",
        created_at=1_700_000_000,
        room=models.Room(sid="RM_1", name=ROOM, metadata='{"outcome": "voicemail"}'),
        participant=models.ParticipantInfo(
            sid="PA_1",
            identity="sip-callee",
            kind=models.ParticipantInfo.Kind.SIP,
            attributes={"sip.callStatus": "hangup", "sip.phoneNumber": "+14155550100"},
            disconnect_reason=models.DisconnectReason.USER_REJECTED,
        ),
        track=models.TrackInfo(sid="TR_1", type=models.TrackType.AUDIO),
    )


EXPECTED = RoomEvent(
    event="participant_left",
    id="EV_1",
    room_name=ROOM,
    room_metadata='{"outcome": "voicemail"}',
    participant=EventParticipant(
        kind=models.ParticipantInfo.Kind.SIP,
        attributes={"sip.callStatus": "hangup", "sip.phoneNumber": "+14155550100"},
        disconnect_reason=models.DisconnectReason.USER_REJECTED,
    ),
    created_at=1_700_000_000.0,
)


@pytest.mark.parametrize(
    "options",
    [
        {},  # as LiveKit posts it: lowerCamel names, enums by name
        {"use_integers_for_enums": True},
        {"preserving_proto_field_name": True},
        {"indent": None, "use_integers_for_enums": True, "preserving_proto_field_name": True},
    ],
)
def test_the_fields_we_read_whichever_way_protobuf_writes_them(options: dict[str, object]) -> None:
    body = MessageToJson(full_event(), **options).encode()  # type: ignore[arg-type]
    assert RoomEvent.from_json(body) == EXPECTED


@pytest.mark.parametrize(
    ("created_at", "read"),
    [
        ('"1700000000"', 1_700_000_000.0),  # protobuf's JSON writes an int64 as a string
        ("1700000000", 1_700_000_000.0),
        ('"0"', None),
        ('"-5"', None),
        ('"1e9"', None),
        ('"99999999999999999999"', None),
        ("true", None),
        ("1.5", None),
        ('"\u0661\u0662"', None),  # other scripts' digits
    ],
)
def test_an_events_time_is_read_when_plausible_and_never_refuses_it(
    created_at: str, read: float | None
) -> None:
    """The time only refines when something happened (a late webhook's end), never decides:
    a value that is no time is no time, not a refused event."""
    body = f'{{"event": "room_finished", "createdAt": {created_at}}}'.encode()
    assert RoomEvent.from_json(body).created_at == read


def test_absent_fields_are_protobufs_defaults() -> None:
    assert RoomEvent.from_json(b'{"event": "room_started"}') == RoomEvent("room_started")
    bare = RoomEvent.from_json(b'{"event": "x", "room": null, "participant": {}}')
    assert bare == RoomEvent("x", participant=EventParticipant())


def test_unknown_enum_names_are_unset_and_unknown_numbers_kept() -> None:
    body = {"event": "x", "participant": {"kind": "NEW_KIND", "disconnectReason": 99}}
    event = RoomEvent.from_json(json.dumps(body).encode())
    assert event.participant == EventParticipant(kind=0, disconnect_reason=99)


@pytest.mark.parametrize("number", ["9" * 4301, "--5", "2147483648", "-2147483649", "1e3"])
def test_an_enum_string_that_is_no_int32_is_unset(number: str) -> None:
    """A signed event's `disconnectReason` of 4,301 digits was int()'s ValueError: a 500,
    which LiveKit retries; `--5` passed the check too."""
    body = {"event": "x", "participant": {"kind": number, "disconnectReason": number}}
    event = RoomEvent.from_json(json.dumps(body).encode())
    assert event.participant == EventParticipant(kind=0, disconnect_reason=0)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"event"',
        b"not json",
        b"\xff\xfe not utf-8",
        b"[" * 30_000 + b"]" * 30_000,
        b'{"event": 5}',
        b'{"event": "x", "id": ["EV_1"]}',
        b'{"event": "x", "room": "call-0123456789ab"}',
        b'{"event": "x", "room": {"name": 1}}',
        b'{"event": "x", "room": {"name": "r", "metadata": {}}}',
        b'{"event": "x", "participant": []}',
        b'{"event": "x", "participant": {"kind": 1.5}}',
        b'{"event": "x", "participant": {"kind": true}}',
        b'{"event": "x", "participant": {"attributes": {"sip.callStatus": 1}}}',
        b'{"event": "x", "participant": {"attributes": ["a"]}}',
        b'{"event": "x", "participant": {"disconnectReason": {}}}',
    ],
)
def test_a_field_we_read_with_the_wrong_type_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        RoomEvent.from_json(body)


def test_an_id_longer_than_a_database_index_keeps_is_malformed() -> None:
    """LiveKit's ids are "EV_" and 12 characters; the id is kept under a unique index."""
    longest = {"event": "x", "id": "EV_" + "a" * 253}
    assert RoomEvent.from_json(json.dumps(longest).encode()).id == longest["id"]
    too_long = {"event": "x", "id": "EV_" + "a" * 254}
    with pytest.raises(MalformedEvent, match="^id is longer than 256 characters$"):
        RoomEvent.from_json(json.dumps(too_long).encode())


def test_an_attribute_no_database_can_keep_is_left_out() -> None:
    """Not the event refused: a SIP header mapped to an attribute is the network's words."""
    body = (
        b'{"event": "x", "participant": {"attributes": {"a\\u0000": "b", "c": "\\u0000",'
        b' "d": "\\ud800", "sip.callStatus": "active"}}}'
    )
    event = RoomEvent.from_json(body)
    assert event.participant is not None
    assert dict(event.participant.attributes) == {"sip.callStatus": "active"}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"event": "room_finished\\u0000"}', "event"),
        (b'{"event": "x", "id": "EV_\\u0000"}', "id"),
        (b'{"event": "x", "room": {"name": "call-\\u0000"}}', "name"),
        (b'{"event": "x", "room": {"name": "r", "metadata": "\\u0000"}}', "metadata"),
        (b'{"event": "x", "id": "EV_\\ud800"}', "id"),
    ],
)
def test_a_string_no_database_can_keep_is_malformed(body: bytes, named: str) -> None:
    """A NUL is a protobuf string, but PostgreSQL's text cannot hold one (the id, the room
    and the event are stored); a lone surrogate is not even that."""
    with pytest.raises(MalformedEvent, match=rf"^(participant\.|room\.)?{named} must "):
        RoomEvent.from_json(body)


def test_an_event_name_longer_than_any_livekit_sends_is_malformed() -> None:
    """An event name LiveKit does not send is kept in its call's timeline: a signed body's
    whole megabyte of one went into every listing of that call's timeline."""
    longest = {"event": "e" * 64}
    assert RoomEvent.from_json(json.dumps(longest).encode()).event == longest["event"]
    too_long = {"event": "e" * 65, "id": "EV_1"}
    with pytest.raises(MalformedEvent, match="^event is longer than 64 characters$"):
        RoomEvent.from_json(json.dumps(too_long).encode())
