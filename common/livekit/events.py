"""LiveKit's webhook events, as much of them as we read, from the JSON body LiveKit posts.

LiveKit posts a `WebhookEvent` in protobuf's JSON form (lowerCamel names, enums by name). We
read six of its fields, so we take them from the (already verified) body with `json.loads`
instead of protobuf's pure-Python `json_format.Parse`, which builds the whole message and
cost about as much as the signature check. What we read is checked as strictly as protobuf
would: a field of the wrong type makes the event malformed (400); fields we do not read are
not looked at, as `ignore_unknown_fields` did for fields we did not know. A string we read
must also be text every database can keep: no lone surrogate, no NUL (`_storable`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models

from common.text import text_problem


class MalformedEvent(ValueError):
    """The body is not a LiveKit webhook event; the message says which field (no values)."""


@dataclass(frozen=True)
class EventParticipant:
    """The participant an event is about: its kind, attributes and why it left (enum numbers)."""

    kind: int = models.ParticipantInfo.Kind.STANDARD
    attributes: Mapping[str, str] = field(default_factory=dict)
    disconnect_reason: int = models.DisconnectReason.UNKNOWN_REASON


@dataclass(frozen=True)
class RoomEvent:
    """One webhook event: what happened (`event`), its id, its room, and its participant."""

    event: str
    id: str = ""
    room_name: str = ""
    room_metadata: str = ""
    participant: EventParticipant | None = None
    created_at: float | None = None  # when LiveKit made the event (unix seconds, whole)

    @classmethod
    def from_json(cls, body: bytes) -> RoomEvent:
        """The event in `body` (UTF-8 JSON); MalformedEvent if it is not one."""
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise MalformedEvent(f"not UTF-8 JSON ({type(exc).__name__})") from None
        except RecursionError:  # e.g. 30,000 nested "[" fit in a small body
            raise MalformedEvent("nested too deeply") from None
        return cls.from_dict(_object(doc, "event"))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RoomEvent:
        room = _message(doc, "room")
        participant = _message(doc, "participant")
        return cls(
            event=_short_string(doc, "event", MAX_EVENT_NAME_CHARS),
            id=_short_string(doc, "id", MAX_EVENT_ID_CHARS),
            room_name=_string(room, "name"),
            room_metadata=_string(room, "metadata"),
            participant=None if participant is None else _participant(participant),
            created_at=_unix_seconds(_field(doc, "createdAt")),
        )


# LiveKit's event ids are "EV_" and 12 characters. The id is kept under a unique index, and
# PostgreSQL's holds at most 2,704 bytes of a key: a longer id failed the insert, a 503 that
# LiveKit retries (the database was fine), on PostgreSQL alone. 256 characters fit in any case.
MAX_EVENT_ID_CHARS = 256


# LiveKit's event names are words of up to 30 characters ("participant_connection_aborted").
# One it does not send is kept, as `applied`, in its call's timeline: of any length, a signed
# body's whole megabyte went into every listing of that call's timeline.
MAX_EVENT_NAME_CHARS = 64


def _short_string(doc: Mapping[str, Any], name: str, most: int) -> str:
    value = _string(doc, name)
    if len(value) > most:
        raise MalformedEvent(f"{name} is longer than {most} characters")
    return value


def _participant(doc: Mapping[str, Any]) -> EventParticipant:
    attributes = _field(doc, "attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict) or not all(
        isinstance(v, str) for v in attributes.values()
    ):
        raise MalformedEvent("participant.attributes is not a map of strings")
    return EventParticipant(
        kind=_enum(doc, "kind", models.ParticipantInfo.Kind),
        attributes=_storable_attributes(attributes),
        disconnect_reason=_enum(doc, "disconnectReason", models.DisconnectReason),
    )


def _storable_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    """The participant's attributes that are text a database can keep; one that is not (a
    NUL, a lone surrogate) is left out, as if LiveKit had not set it. Any of them made the
    whole event malformed (400, which LiveKit does not retry): a SIP header the trunk maps to
    an attribute (`sip.h.*`, the carrier's or the callee's network's words, never read here)
    holding a NUL lost every event of the callee's participant, its hang-up among them, and
    the call waited for the reaper."""
    return {
        key: value
        for key, value in attributes.items()
        if text_problem(key) is None and text_problem(value) is None
    }


def _object(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise MalformedEvent(f"{name} is not a JSON object")
    return value


def _field(doc: Mapping[str, Any], name: str) -> Any:
    """A field by its JSON name, or by its proto name (protobuf's parser takes both)."""
    value = doc.get(name)
    if value is None and name in _PROTO_NAMES:
        value = doc.get(_PROTO_NAMES[name])
    return value


_PROTO_NAMES = {"disconnectReason": "disconnect_reason", "createdAt": "created_at"}


def _unix_seconds(value: object) -> float | None:
    """An int64 of protobuf's JSON (a string of digits, or a number): None if it is none, or
    not a plausible time (it only ever refines when something happened, never decides)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**11:
        return float(value)
    return None


def _message(doc: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = _field(doc, name)
    return None if value is None else _object(value, name)


def _string(doc: Mapping[str, Any] | None, name: str) -> str:
    value = None if doc is None else _field(doc, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedEvent(f"{name} is not a string")
    return _storable(value, name)


def _storable(value: str, name: str) -> str:
    """`value`, unless it is no text we can keep: a lone surrogate (a "\\ud800" escape) is no
    protobuf string (they are UTF-8) and nothing downstream can store one; a NUL is one, but
    PostgreSQL's text cannot hold it (the event's id and room are stored), so kept it was a
    503 that LiveKit retries, on PostgreSQL alone. Either makes the event malformed (400)."""
    problem = text_problem(value)
    if problem is not None:
        raise MalformedEvent(f"{name} {problem}")
    return value


_ENUM_NUMBER = re.compile(r"-?[0-9]{1,10}")


def _enum(doc: Mapping[str, Any], name: str, enum: Any) -> int:
    """An enum field, by name or number. proto3 enums are open: an unknown number is kept
    (and means nothing to us); an unknown name is left unset, as protobuf's parser does with
    `ignore_unknown_fields`."""
    value = _field(doc, name)
    if value is None:
        return 0
    if isinstance(value, str):
        try:
            number: int = enum.Value(value)
        except ValueError:
            # an int32's digits: a longer run was int()'s ValueError (over 4,300 digits), a 500
            digits = _ENUM_NUMBER.fullmatch(value)
            number = int(value) if digits and -(2**31) <= int(value) < 2**31 else 0
        return number
    if isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31:
        return value
    raise MalformedEvent(f"{name} is not an enum name or number")
