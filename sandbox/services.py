"""The LiveKit server API methods the sandbox implements, with LiveKit's grant checks.

Grants, as livekit-server checks them (``pkg/service/*.go``) and as livekit-api 1.2 sends them:

| Method                                 | Grant                          | SDK's token        |
|----------------------------------------|--------------------------------|--------------------|
| AgentDispatchService/CreateDispatch    | video.roomAdmin + video.room   | same               |
| AgentDispatchService/ListDispatch      | video.roomAdmin + video.room   | same               |
| SIP/CreateSIPParticipant               | sip.call                       | sip.call (+ empty  |
|                                        |                                | video grant)       |
| RoomService/CreateRoom, DeleteRoom     | video.roomCreate               | same               |
| RoomService/ListRooms                  | video.roomList                 | same               |
| RoomService/UpdateRoomMetadata,        | video.roomAdmin + video.room   | same               |
| ListParticipants                       |                                |                    |

Requests carrying ``X-Livekit-Request-Id`` (the SDK's idempotency key, kept across its retries)
are deduplicated for CreateDispatch and CreateSIPParticipant: a repeat returns the first answer
and never dials twice, as LiveKit's request-id deduplication does.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from livekit.api.access_token import Claims
from livekit.protocol.agent_dispatch import (
    AgentDispatch,
    AgentDispatchState,
    CreateAgentDispatchRequest,
    ListAgentDispatchRequest,
    ListAgentDispatchResponse,
)
from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
    UpdateRoomMetadataRequest,
)
from livekit.protocol.sip import CreateSIPParticipantRequest, SIPParticipantInfo

from common.contracts import (
    ATTR_SIP_CALL_ID,
    ATTR_SIP_CALL_STATUS,
    ATTR_SIP_PHONE_NUMBER,
    ATTR_SIP_TRUNK_ID,
    CALLEE_WAIT_GRACE_S,
    DispatchMetadata,
)
from common.masking import mask_phone
from sandbox import twirp
from sandbox.agent import AgentReports, SimulatedAgent
from sandbox.rooms import RoomRegistry, SandboxRoom, agent_participant
from sandbox.scenarios import DEFAULT_RINGING_TIMEOUT_S, SipStatus, scenario_for_number
from sandbox.simulation import CALL_STATUS_DIALING, CallSimulation
from sandbox.twirp import TwirpError
from sandbox.util import new_id, now_ms

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = "X-Livekit-Request-Id"
# The sandbox has no trunks to configure: a request without one (LiveKit would answer
# invalid_argument "missing sip trunk id and sip number") is placed on this pretend trunk.
SANDBOX_TRUNK_ID: Final = "ST_sandbox"
REQUEST_ID_CACHE_SIZE: Final = 1000

# livekit/protocol livekit/sip.go sipCodeToGRPCCode, as twirp codes, for the SIP codes we produce.
_SIP_TWIRP_CODES: Final[dict[int, str]] = {
    480: "resource_exhausted",
    486: "resource_exhausted",
    487: "aborted",
    503: "failed_precondition",
}


def sip_call_error(status: SipStatus) -> TwirpError:
    """The error a ``wait_until_answered`` CreateSIPParticipant gets when the call fails.

    The SDK turns it into ``livekit.api.SipCallError`` (``sip_status_code``, ``sip_status``).
    """
    code = _SIP_TWIRP_CODES.get(status.code)
    if code is None:
        code = "failed_precondition" if 500 <= status.code < 600 else "invalid_argument"
    return TwirpError(
        code,
        f"sip status {status.code}: {status.reason}",
        {"sip_status_code": str(status.code), "sip_status": status.reason},
    )


@dataclass
class CallContext:
    """One API request: its verified claims (None without a token) and idempotency key."""

    claims: Claims | None
    request_id: str | None = None
    authorized: bool = field(default=False, init=False)

    def require_room_admin(self, room: str) -> None:
        twirp.require_room_admin(self.claims, room)
        self.authorized = True

    def require_room_create(self) -> None:
        twirp.require_room_create(self.claims)
        self.authorized = True

    def require_room_list(self) -> None:
        twirp.require_room_list(self.claims)
        self.authorized = True

    def require_sip_call(self) -> None:
        twirp.require_sip_call(self.claims)
        self.authorized = True


RequestT = TypeVar("RequestT", bound=Message)
ValueT = TypeVar("ValueT")


class _BoundedCache(Generic[ValueT]):
    """The answers to the most recent request ids, so a retry gets the first answer."""

    def __init__(self, size: int = REQUEST_ID_CACHE_SIZE) -> None:
        self._size = size
        self._items: collections.OrderedDict[str, ValueT] = collections.OrderedDict()

    def get(self, key: str | None) -> ValueT | None:
        return self._items.get(key) if key else None

    def put(self, key: str | None, value: ValueT) -> None:
        if not key:
            return
        self._items[key] = value
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass(frozen=True)
class Route(Generic[RequestT]):
    request_type: type[RequestT]
    handler: Callable[[CallContext, RequestT], Awaitable[Message]]


@dataclass
class Dial:
    """One SIP call the sandbox placed: to whom, in which room, when it started and ended
    (monotonic seconds). Tests count pacing and concurrency from these, not from ours."""

    number: str
    room: str
    started: float
    ended: float | None = None


DIAL_LOG_SIZE = 200_000
# The agent's wait for its callee (CALLEE_WAIT_GRACE_S past the ringing timeout) lasts at least
# this long in real time, whatever the time scale: the server dials a moment after it
# dispatches, within its LiveKit request bound (10 s), and at time scale 0 the scaled wait is 0.
MIN_CALLEE_WAIT_S = 10.0


class LiveKitServices:
    """Room, agent dispatch and SIP methods over a :class:`RoomRegistry`."""

    def __init__(
        self, registry: RoomRegistry, *, time_scale: float, reports: AgentReports | None = None
    ) -> None:
        self.registry = registry
        self.time_scale = time_scale
        self.reports = reports
        self.simulations: set[CallSimulation] = set()
        self.dials: collections.deque[Dial] = collections.deque(maxlen=DIAL_LOG_SIZE)
        self._sip_by_request_id: _BoundedCache[SIPParticipantInfo] = _BoundedCache()
        self._dispatch_by_request_id: _BoundedCache[AgentDispatch] = _BoundedCache()
        # Rooms our agent was dispatched to and no callee has joined yet, by name.
        self._callee_waits: dict[str, asyncio.Task[None]] = {}

    def routes(self) -> dict[str, Route[Any]]:
        """Handlers by Twirp path, ``livekit.<Service>/<Method>``."""
        return {
            "livekit.AgentDispatchService/CreateDispatch": Route(
                CreateAgentDispatchRequest, self.create_dispatch
            ),
            "livekit.AgentDispatchService/ListDispatch": Route(
                ListAgentDispatchRequest, self.list_dispatch
            ),
            "livekit.SIP/CreateSIPParticipant": Route(
                CreateSIPParticipantRequest, self.create_sip_participant
            ),
            "livekit.RoomService/CreateRoom": Route(CreateRoomRequest, self.create_room),
            "livekit.RoomService/ListRooms": Route(ListRoomsRequest, self.list_rooms),
            "livekit.RoomService/DeleteRoom": Route(DeleteRoomRequest, self.delete_room),
            "livekit.RoomService/UpdateRoomMetadata": Route(
                UpdateRoomMetadataRequest, self.update_room_metadata
            ),
            "livekit.RoomService/ListParticipants": Route(
                ListParticipantsRequest, self.list_participants
            ),
        }

    # -- lifecycle -------------------------------------------------------------------------

    def pending(self) -> set[asyncio.Task[None]]:
        return {s.task for s in self.simulations if s.task is not None and not s.task.done()}

    def cancel_all(self) -> set[asyncio.Task[None]]:
        """Stop every simulation (and agent's wait for its callee) without posting anything;
        returns their tasks to await."""
        tasks = self.pending() | set(self._callee_waits.values())
        for task in tasks:
            task.cancel()
        return tasks

    def end_room(self, room: SandboxRoom, reason: DisconnectReason) -> None:
        """End ``room`` now: its calls stop, participants leave with ``reason``, room_finished.

        Synchronous on purpose: a cancelled simulation is parked at a sleep and posts nothing
        more, so the events of the room stay consistent.
        """
        for simulation in list(self.simulations):
            if simulation.room is room and simulation.task is not None:
                if simulation.agent is not None and reason == DisconnectReason.ROOM_DELETED:
                    simulation.agent.ended("api")  # the room was deleted through the API
                simulation.task.cancel()
        for identity in list(room.participants):
            self.registry.leave(room, identity, reason)
        self.registry.finish(room)

    def _agent_waits_for_callee(self, room: SandboxRoom) -> None:
        """Our agent, dispatched to a call's room, ends the call (deletes the room) if no callee
        joins within the ringing timeout and CALLEE_WAIT_GRACE_S (agent/worker.py): a server
        that died between its dispatch and its dial left such a room, which otherwise stayed
        open for good, and the call live until the reaper's bound."""
        if room.name in self._callee_waits or any(
            p.kind == ParticipantInfo.SIP for p in room.participants.values()
        ):
            return
        metadata = DispatchMetadata.parse(room.dispatches[-1].metadata)
        if metadata.call_id != room.name:  # not a call of ours
            return
        ringing_s = metadata.ringing_timeout_s or DEFAULT_RINGING_TIMEOUT_S
        wait_s = max((ringing_s + CALLEE_WAIT_GRACE_S) * self.time_scale, MIN_CALLEE_WAIT_S)
        task = asyncio.get_running_loop().create_task(self._end_if_no_callee(room, wait_s))
        self._callee_waits[room.name] = task

        def done(_: object) -> None:
            if self._callee_waits.get(room.name) is task:
                del self._callee_waits[room.name]

        task.add_done_callback(done)

    async def _end_if_no_callee(self, room: SandboxRoom, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        if self.registry.rooms.get(room.name) is not room or any(
            p.kind == ParticipantInfo.SIP for p in room.participants.values()
        ):
            return
        logger.info(
            "sandbox room %s: no callee joined within %.0f s of the agent's dispatch; the agent"
            " ends the call, as ours does",
            room.name,
            wait_s,
        )
        self.end_room(room, DisconnectReason.ROOM_DELETED)

    def _agent_for(self, room: SandboxRoom) -> SimulatedAgent | None:
        """What our agent would report, if it was dispatched to `room` and may report."""
        if self.reports is None or not room.dispatches:
            return None
        metadata = DispatchMetadata.parse(room.dispatches[-1].metadata)
        if metadata.report_url is None or metadata.call_id != room.name:
            return None
        return SimulatedAgent(metadata, self.reports)

    # -- AgentDispatchService --------------------------------------------------------------

    async def create_dispatch(
        self, ctx: CallContext, req: CreateAgentDispatchRequest
    ) -> AgentDispatch:
        ctx.require_room_admin(req.room)
        if not req.room:
            raise TwirpError("invalid_argument", "no room name")
        if (earlier := self._dispatch_by_request_id.get(ctx.request_id)) is not None:
            return earlier
        room, _ = self.registry.get_or_create(req.room)
        dispatch = AgentDispatch(
            id=new_id("AD_"),
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
            restart_policy=req.restart_policy,
            deployment=req.deployment,
            attributes=dict(req.attributes),
            state=AgentDispatchState(created_at=time.time_ns()),
        )
        room.dispatches.append(dispatch)
        room.agent_present = True
        if room.agent is None:  # it joins as it is dispatched
            room.agent = agent_participant(room, f"agent-{room.name}")
        self._dispatch_by_request_id.put(ctx.request_id, dispatch)
        self._agent_waits_for_callee(room)
        logger.debug(
            "sandbox dispatch %s: agent %r to room %s (no agent runs in the sandbox)",
            dispatch.id,
            req.agent_name,
            req.room,
        )
        return dispatch

    async def list_dispatch(
        self, ctx: CallContext, req: ListAgentDispatchRequest
    ) -> ListAgentDispatchResponse:
        ctx.require_room_admin(req.room)
        room = self.registry.rooms.get(req.room)
        dispatches = room.dispatches if room else []
        if req.dispatch_id:
            dispatches = [d for d in dispatches if d.id == req.dispatch_id]
        return ListAgentDispatchResponse(agent_dispatches=dispatches)

    # -- SIP -------------------------------------------------------------------------------

    async def create_sip_participant(
        self, ctx: CallContext, req: CreateSIPParticipantRequest
    ) -> SIPParticipantInfo:
        ctx.require_sip_call()
        _validate_sip_request(req)
        if (earlier := self._sip_by_request_id.get(ctx.request_id)) is not None:
            logger.info("sandbox: repeated CreateSIPParticipant request; not dialing again")
            return earlier

        identity = req.participant_identity or f"sip_{req.sip_call_to}"
        room, _ = self.registry.get_or_create(req.room_name)
        if (wait := self._callee_waits.pop(room.name, None)) is not None:
            wait.cancel()  # the callee is being dialled
        if identity in room.participants:
            raise TwirpError("already_exists", "participant already exists in the room")

        call_id = new_id("SCL_")
        attributes = dict(req.participant_attributes)
        attributes[ATTR_SIP_CALL_ID] = call_id
        attributes[ATTR_SIP_TRUNK_ID] = req.sip_trunk_id or SANDBOX_TRUNK_ID
        if not req.hide_phone_number:
            attributes[ATTR_SIP_PHONE_NUMBER] = req.sip_call_to
        attributes[ATTR_SIP_CALL_STATUS] = CALL_STATUS_DIALING
        joined_ms = now_ms()
        participant = ParticipantInfo(
            sid=new_id("PA_"),
            identity=identity,
            name=req.participant_name,
            metadata=req.participant_metadata,
            kind=ParticipantInfo.SIP,
            attributes=attributes,
            joined_at=joined_ms // 1000,
            joined_at_ms=joined_ms,
            is_publisher=True,
        )
        self.registry.join(room, participant)
        # LiveKit's SIP bridge publishes the callee's audio track before it even dials.
        self.registry.publish_audio(room, identity)

        scenario = scenario_for_number(req.sip_call_to)
        if not scenario.agent_joins:
            room.agent_present = False
        simulation = CallSimulation(
            registry=self.registry,
            room=room,
            identity=identity,
            call_id=call_id,
            number=req.sip_call_to,
            scenario=scenario,
            ringing_timeout_s=(
                _seconds(req.ringing_timeout, req.HasField("ringing_timeout"))
                or DEFAULT_RINGING_TIMEOUT_S
            ),
            max_call_duration_s=_seconds(req.max_call_duration, req.HasField("max_call_duration")),
            time_scale=self.time_scale,
            agent=self._agent_for(room) if scenario.agent_joins else None,
        )
        self.simulations.add(simulation)
        dial = Dial(req.sip_call_to, req.room_name, time.monotonic())
        self.dials.append(dial)

        def ended(_: object) -> None:
            self.simulations.discard(simulation)
            dial.ended = simulation.left_at or time.monotonic()

        simulation.start().add_done_callback(ended)

        info = SIPParticipantInfo(
            participant_id=participant.sid,
            participant_identity=identity,
            room_name=req.room_name,
            sip_call_id=call_id,
        )
        self._sip_by_request_id.put(ctx.request_id, info)
        if req.wait_until_answered:
            # shield: a client giving up must not cancel the call's own answer future.
            failure = await asyncio.shield(simulation.answered)
            if failure is not None:
                raise sip_call_error(failure)
        return info

    # -- RoomService -----------------------------------------------------------------------

    async def create_room(self, ctx: CallContext, req: CreateRoomRequest) -> Room:
        ctx.require_room_create()
        if not req.name:
            raise TwirpError("invalid_argument", "no room name")
        room, created = self.registry.get_or_create(req.name)
        if created and req.metadata:
            self.registry.set_metadata(room, req.metadata)
        return room.to_proto()

    async def list_rooms(self, ctx: CallContext, req: ListRoomsRequest) -> ListRoomsResponse:
        ctx.require_room_list()
        wanted = set(req.names)
        rooms = [
            room.to_proto()
            for room in self.registry.rooms.values()
            if not wanted or room.name in wanted
        ]
        return ListRoomsResponse(rooms=rooms)

    async def delete_room(self, ctx: CallContext, req: DeleteRoomRequest) -> DeleteRoomResponse:
        ctx.require_room_create()
        room = self._existing_room(req.room)
        logger.info("sandbox room %s deleted through the API", room.name)
        self.end_room(room, DisconnectReason.ROOM_DELETED)
        return DeleteRoomResponse()

    async def update_room_metadata(self, ctx: CallContext, req: UpdateRoomMetadataRequest) -> Room:
        ctx.require_room_admin(req.room)
        room = self._existing_room(req.room)
        self.registry.set_metadata(room, req.metadata)
        return room.to_proto()

    async def list_participants(
        self, ctx: CallContext, req: ListParticipantsRequest
    ) -> ListParticipantsResponse:
        ctx.require_room_admin(req.room)
        room = self.registry.rooms.get(req.room)
        if room is None:  # as LiveKit lists a room it does not have: empty, not not_found
            return ListParticipantsResponse()
        participants = list(room.participants.values())
        if room.agent_present and not any(p.kind == ParticipantInfo.AGENT for p in participants):
            if room.agent is None:  # the same participant on every listing, as LiveKit's
                room.agent = agent_participant(room, f"agent-{room.name}")
            participants.append(room.agent)
        return ListParticipantsResponse(participants=participants)

    def _existing_room(self, name: str) -> SandboxRoom:
        room = self.registry.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", "requested room does not exist")
        return room


def _validate_sip_request(req: CreateSIPParticipantRequest) -> None:
    """LiveKit's CreateSIPParticipantRequest.Validate, except that no trunk is needed."""
    if not req.sip_call_to:
        raise TwirpError("invalid_argument", "missing sip callee number")
    if "@" in req.sip_call_to:
        raise TwirpError(
            "invalid_argument",
            "SipCallTo should be a phone number or SIP user, not a full SIP URI",
        )
    if not req.room_name:
        raise TwirpError("invalid_argument", "missing room name")
    logger.debug("sandbox: CreateSIPParticipant to %s", mask_phone(req.sip_call_to))


def _seconds(duration: Duration, is_set: bool) -> float | None:
    """A Duration field in seconds, or None when unset or zero (LiveKit then uses its default)."""
    if not is_set:
        return None
    seconds = duration.seconds + duration.nanos / 1e9
    return seconds if seconds > 0 else None
