"""Live rooms and their participants, and the webhook event each change produces.

Event payloads follow livekit-server's ``pkg/telemetry/events.go``: ``room_started`` and
``room_finished`` carry the room; ``participant_joined`` and ``participant_left`` carry the room
and the participant as they are at that moment; ``track_published`` and ``track_unpublished``
carry the room, the track and only the participant's sid and identity (no kind, no attributes).
Every event gets a fresh ``EV_`` id and ``created_at`` in unix seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from livekit.protocol.agent_dispatch import AgentDispatch
from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room, TrackInfo, TrackType
from livekit.protocol.webhook import WebhookEvent

from common.contracts import ATTR_AGENT_NAME
from sandbox.util import new_id, now_ms

logger = logging.getLogger(__name__)

EventSink = Callable[[str, WebhookEvent], None]
"""Receives (room sid, event) for delivery."""

# LiveKit's defaults for rooms created on demand.
EMPTY_TIMEOUT_S = 300
DEPARTURE_TIMEOUT_S = 20


@dataclass
class SandboxRoom:
    """A live room: its identity, metadata, participants and agent dispatches."""

    name: str
    sid: str = field(default_factory=lambda: new_id("RM_"))
    creation_time_ms: int = field(default_factory=now_ms)
    metadata: str = ""
    participants: dict[str, ParticipantInfo] = field(default_factory=dict)
    dispatches: list[AgentDispatch] = field(default_factory=list)
    agent_present: bool = False
    """Our agent is in the room (it joins on its dispatch). The sandbox keeps its participant
    out of the webhooks (a call's six are the callee's) and shows it in ListParticipants."""
    agent: ParticipantInfo | None = None
    """Our agent's participant, once it joined: one participant (its sid, its join time) for
    as long as it stays, as LiveKit lists it."""

    @property
    def creation_time(self) -> int:
        return self.creation_time_ms // 1000

    def to_proto(self) -> Room:
        return Room(
            sid=self.sid,
            name=self.name,
            empty_timeout=EMPTY_TIMEOUT_S,
            departure_timeout=DEPARTURE_TIMEOUT_S,
            creation_time=self.creation_time,
            creation_time_ms=self.creation_time_ms,
            metadata=self.metadata,
            num_participants=len(self.participants),
        )


def agent_participant(room: SandboxRoom, identity: str) -> ParticipantInfo:
    """Our agent's participant, as LiveKit shows it (joined now): named, as livekit-agents
    names each job's participant (`lk.agent.name`), after the agent its room was dispatched."""
    joined_ms = now_ms()
    name = room.dispatches[0].agent_name if room.dispatches else ""
    return ParticipantInfo(
        sid=new_id("PA_"),
        identity=identity,
        kind=ParticipantInfo.AGENT,
        attributes={ATTR_AGENT_NAME: name},
        state=ParticipantInfo.ACTIVE,
        joined_at=joined_ms // 1000,
        joined_at_ms=joined_ms,
    )


class RoomRegistry:
    """The sandbox's rooms. Every change that LiveKit reports by webhook is reported here too."""

    def __init__(self, sink: EventSink) -> None:
        self.rooms: dict[str, SandboxRoom] = {}
        self._sink = sink

    def get_or_create(self, name: str) -> tuple[SandboxRoom, bool]:
        """The live room called ``name``, creating it (and posting room_started) if needed."""
        room = self.rooms.get(name)
        if room is not None:
            return room, False
        room = SandboxRoom(name=name)
        self.rooms[name] = room
        logger.debug("sandbox room %s started (%s)", name, room.sid)
        self._emit("room_started", room)
        return room, True

    def join(self, room: SandboxRoom, participant: ParticipantInfo) -> None:
        participant.state = ParticipantInfo.ACTIVE
        room.participants[participant.identity] = participant
        self._emit("participant_joined", room, participant)

    def publish_audio(self, room: SandboxRoom, identity: str) -> None:
        """The participant publishes its audio track (a SIP participant does so while dialing)."""
        participant = room.participants.get(identity)
        if participant is None:
            return
        track = TrackInfo(
            sid=new_id("TR_"), type=TrackType.AUDIO, name=identity, mime_type="audio/opus"
        )
        participant.tracks.append(track)
        self._emit("track_published", room, _track_owner(participant), track)

    def set_attributes(
        self, room: SandboxRoom, identity: str, attributes: Mapping[str, str]
    ) -> None:
        """Update a participant's attributes; like LiveKit, no webhook reports this."""
        participant = room.participants.get(identity)
        if participant is not None:
            participant.attributes.update(attributes)

    def set_metadata(self, room: SandboxRoom, metadata: str) -> None:
        """Update the room's metadata; like LiveKit, no webhook reports this."""
        room.metadata = metadata

    def leave(
        self,
        room: SandboxRoom,
        identity: str,
        reason: DisconnectReason,
        attributes: Mapping[str, str] | None = None,
    ) -> None:
        participant = room.participants.pop(identity, None)
        if participant is None:
            return
        if attributes:
            participant.attributes.update(attributes)
        for track in participant.tracks:
            self._emit("track_unpublished", room, _track_owner(participant), track)
        del participant.tracks[:]
        participant.state = ParticipantInfo.DISCONNECTED
        participant.disconnect_reason = reason
        self._emit("participant_left", room, participant)

    def finish(self, room: SandboxRoom) -> None:
        """Close the room (posting room_finished) if it is still live."""
        if self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        logger.debug("sandbox room %s finished (%s)", room.name, room.sid)
        self._emit("room_finished", room)

    def _emit(
        self,
        kind: str,
        room: SandboxRoom,
        participant: ParticipantInfo | None = None,
        track: TrackInfo | None = None,
    ) -> None:
        event = WebhookEvent(
            event=kind,
            room=room.to_proto(),
            id=new_id("EV_"),
            created_at=int(time.time()),
        )
        if participant is not None:
            event.participant.CopyFrom(participant)
        if track is not None:
            event.track.CopyFrom(track)
        self._sink(room.sid, event)


def _track_owner(participant: ParticipantInfo) -> ParticipantInfo:
    return ParticipantInfo(sid=participant.sid, identity=participant.identity)
