"""The life of one simulated outbound SIP call, played out in a room of the registry.

What LiveKit's SIP service does, as read from livekit/sip ``pkg/sip/outbound.go``: the SIP
participant joins the room before dialing, with ``sip.callStatus`` = ``dialing``; the status
attribute then moves to ``ringing`` and ``active`` (attribute changes post no webhook). When the
callee hangs up the status becomes ``hangup`` and the participant leaves with
``CLIENT_INITIATED``. When the call fails before it is answered (busy, no answer, trunk failure)
the status attribute is left as it was (``ringing`` or ``dialing``) and the participant leaves
with the failure's disconnect reason: ``USER_REJECTED`` (486 and the like), ``USER_UNAVAILABLE``
(480, the ringing timeout), and for a call the SIP service drops (a trunk's 5xx) none, which
LiveKit records as ``CLIENT_INITIATED`` (livekit/sip ``pkg/sip/errors.go``; livekit/livekit
``pkg/rtc/signalling/signalhandler.go``). LiveKit reports no SIP status code in webhooks, and
neither does the sandbox (the SIP status shows in its log and in the error of a
``wait_until_answered`` dial).

Once the last participant has left, the room finishes after a short departure delay (LiveKit
waits ``departure_timeout``, 20 s by default; the sandbox waits 1 s).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from livekit.protocol.models import DisconnectReason, ParticipantInfo

from common.contracts import (
    ATTR_SIP_CALL_STATUS,
    OUTCOME_VOICEMAIL,
    SIP_STATUS_ACTIVE,
    SIP_STATUS_DIALING,
    SIP_STATUS_HANGUP,
    SIP_STATUS_RINGING,
    RoomMetadata,
)
from common.masking import mask_phone
from sandbox.agent import AMD_AFTER_S, SimulatedAgent, conversation, voicemail_turns
from sandbox.rooms import RoomRegistry, SandboxRoom, agent_participant
from sandbox.scenarios import (
    REQUEST_TERMINATED,
    RINGING_AFTER_S,
    TEMPORARILY_UNAVAILABLE,
    Scenario,
    SipStatus,
)

logger = logging.getLogger(__name__)

# Participant attribute names and values: common.contracts (what LiveKit's SIP service sets).
CALL_STATUS_DIALING: Final = SIP_STATUS_DIALING
CALL_STATUS_RINGING: Final = SIP_STATUS_RINGING
CALL_STATUS_ACTIVE: Final = SIP_STATUS_ACTIVE
CALL_STATUS_HANGUP: Final = SIP_STATUS_HANGUP

DEPARTURE_S: Final = 1.0
# Real seconds, whatever the time scale, between moments of 0666 and 0404 that the server must
# see in order: the agent's answer report before its death (counted from the answer), and the
# server's wait to end a call (5 s after the agent left, AGENT_JOIN_TIMEOUT_S) before the
# silent callee's hang-up (a minute at scale 1, counted from the agent's death or the answer).
# At 0 ("instant") each pair came at one instant and raced: the callee's hang-up won, and the
# calls read `completed` with no reason (0666 `failed`, its answer unseen), not ended by the
# server as the README's table says.
ANSWER_SEEN_S: Final = 0.5
SILENCE_LEAST_S: Final = 1.0
VOICEMAIL_METADATA: Final = RoomMetadata.with_outcome("", OUTCOME_VOICEMAIL)


class CallSimulation:
    """Plays ``scenario`` for the SIP participant ``identity`` already joined to ``room``.

    ``answered`` resolves once the call is answered (None) or has failed (its SIP status), which
    is what a ``wait_until_answered`` request waits for.
    """

    def __init__(
        self,
        *,
        registry: RoomRegistry,
        room: SandboxRoom,
        identity: str,
        call_id: str,
        number: str,
        scenario: Scenario,
        ringing_timeout_s: float,
        max_call_duration_s: float | None,
        time_scale: float,
        agent: SimulatedAgent | None = None,
    ) -> None:
        self.registry = registry
        self.agent = agent  # what our agent would report about this call (None: no dispatch)
        self.room = room
        self.identity = identity
        self.call_id = call_id
        self.scenario = scenario
        self._masked = mask_phone(number)
        self._ringing_timeout_s = ringing_timeout_s
        self._max_call_duration_s = max_call_duration_s
        self._time_scale = time_scale
        self._elapsed = 0.0
        self.answered: asyncio.Future[SipStatus | None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.left_at: float | None = None  # when the callee left (monotonic seconds)

    @property
    def elapsed_s(self) -> float:
        """Simulated (unscaled) seconds since the participant joined, as far as the call got."""
        return self._elapsed

    def start(self) -> asyncio.Task[None]:
        logger.info(
            "sandbox call %s to %s in room %s: playing scenario %s",
            self.call_id,
            self._masked,
            self.room.name,
            self.scenario.name,
            extra={"call_id": self.room.name},
        )
        self.task = asyncio.create_task(self._play(), name=f"sandbox-call-{self.call_id}")
        # Cancelled before an answer (room deleted, sandbox stopped): the INVITE is cancelled.
        self.task.add_done_callback(lambda _: self._resolve(REQUEST_TERMINATED))
        if self.agent is not None:  # however it ended: the agent's last reports go, then none
            self.task.add_done_callback(lambda _: self.agent.retire() if self.agent else None)
        return self.task

    async def _wait_until(self, t: float, *, not_before: float = 0.0) -> None:
        """Sleep until ``t`` seconds (scaled) after the participant joined, and at least until
        the loop's time ``not_before``."""
        delay = max(t - self._elapsed, 0.0)
        self._elapsed = max(self._elapsed, t)
        left = not_before - asyncio.get_running_loop().time()
        await asyncio.sleep(max(delay * self._time_scale, left))

    def _resolve(self, result: SipStatus | None) -> None:
        if not self.answered.done():
            self.answered.set_result(result)

    def _set_status(self, status: str) -> None:
        self.registry.set_attributes(self.room, self.identity, {ATTR_SIP_CALL_STATUS: status})

    async def _play(self) -> None:
        scenario = self.scenario
        if scenario.answer_after_s is not None:
            ring_ends_at, ending = scenario.answer_after_s, "answer"
        elif scenario.fail_after_s is not None:
            ring_ends_at, ending = scenario.fail_after_s, "fail"
        else:
            ring_ends_at, ending = math.inf, "timeout"
        if self._ringing_timeout_s < ring_ends_at:
            ring_ends_at, ending = self._ringing_timeout_s, "timeout"

        if RINGING_AFTER_S < ring_ends_at:
            await self._wait_until(RINGING_AFTER_S)
            self._set_status(CALL_STATUS_RINGING)
            logger.debug("sandbox call %s ringing", self.call_id)
        await self._wait_until(ring_ends_at)

        if ending == "fail" and scenario.failure is not None:
            await self._fail(scenario.failure, scenario.failure_reason)
        elif ending != "answer":
            await self._fail(TEMPORARILY_UNAVAILABLE, DisconnectReason.USER_UNAVAILABLE)
        else:
            await self._converse(answered_at=ring_ends_at)

    async def _converse(self, answered_at: float) -> None:
        self._set_status(CALL_STATUS_ACTIVE)
        self._resolve(None)
        logger.debug("sandbox call %s answered", self.call_id)
        talk_s = self.scenario.talk_s
        if self._max_call_duration_s is not None:
            talk_s = min(talk_s, max(self._max_call_duration_s - answered_at, 0.0))
        loop = asyncio.get_running_loop()
        silence_from = loop.time()  # no agent (0404): from the answer
        for at_s, action in self._call_actions(talk_s):
            if action == self._agent_dies:
                await self._wait_until(answered_at + at_s, not_before=silence_from + ANSWER_SEEN_S)
                silence_from = loop.time()
            else:
                await self._wait_until(answered_at + at_s)
            action()
        full = talk_s == self.scenario.talk_s
        silent = self.scenario.agent_dies_after_s is not None or not self.scenario.agent_joins
        until = silence_from + SILENCE_LEAST_S if full and silent else 0.0
        await self._wait_until(answered_at + talk_s, not_before=until)
        ended_by = "callee hung up" if full else "max_call_duration hit"
        logger.info(
            "sandbox call %s in room %s: %s after %.0f s",
            self.call_id,
            self.room.name,
            ended_by,
            talk_s,
            extra={"call_id": self.room.name},
        )
        self.left_at = time.monotonic()
        self.registry.leave(
            self.room,
            self.identity,
            DisconnectReason.CLIENT_INITIATED,
            {ATTR_SIP_CALL_STATUS: CALL_STATUS_HANGUP},
        )
        if self.agent is not None:
            voicemail = self.scenario.voicemail_after_s is not None
            self.agent.ended(
                "agent" if voicemail else "callee" if full else "system", voicemail=voicemail
            )
        await self._finish_room_if_empty()

    def _call_actions(self, talk_s: float) -> list[tuple[float, Callable[[], None]]]:
        """What happens during the conversation, by seconds after the answer."""
        actions: list[tuple[float, Callable[[], None]]] = []
        voicemail_after_s = self.scenario.voicemail_after_s
        if voicemail_after_s is not None and voicemail_after_s < talk_s:
            actions.append((voicemail_after_s, self._reached_voicemail))
        agent = self.agent
        if agent is not None:
            agent.answered()
            machine = voicemail_after_s is not None
            actions.append((AMD_AFTER_S, lambda: agent.amd("machine-vm" if machine else "human")))
            speaks_s = talk_s
            dies_after_s = self.scenario.agent_dies_after_s
            if dies_after_s is not None and dies_after_s < talk_s:
                self.registry.join(self.room, self._agent_participant())
                actions.append((dies_after_s, self._agent_dies))
                speaks_s = dies_after_s
            script = (
                voicemail_turns(agent.config, speaks_s)
                if machine
                else conversation(agent.config, speaks_s)
            )
            actions += [(t.at_s, functools.partial(agent.said, t)) for t in script]
        return sorted(actions, key=lambda item: item[0])

    @property
    def _agent_identity(self) -> str:
        return f"agent-{self.call_id}"

    def _agent_participant(self) -> ParticipantInfo:
        """Our agent's participant, shown only where it matters (the agent_dies scenario):
        the other scenarios keep to the six webhooks a call's callee makes happen."""
        return agent_participant(self.room, self._agent_identity)

    def _agent_dies(self) -> None:
        """Our agent's process dies: its participant leaves the room, which goes on with the
        callee in it; its reports already queued go, and no more."""
        self.registry.leave(self.room, self._agent_identity, DisconnectReason.SIGNAL_CLOSE)
        self.room.agent_present = False
        agent, self.agent = self.agent, None
        if agent is not None:
            agent.retire()
        logger.info(
            "sandbox call %s in room %s: the agent's process died",
            self.call_id,
            self.room.name,
            extra={"call_id": self.room.name},
        )

    def _reached_voicemail(self) -> None:
        # What our agent does when it reaches a voicemail box.
        self.registry.set_metadata(self.room, VOICEMAIL_METADATA)
        logger.debug("sandbox call %s reached voicemail", self.call_id)

    async def _fail(self, status: SipStatus, reason: DisconnectReason) -> None:
        self._resolve(status)
        if self.agent is not None:
            self.agent.ended("system")
        logger.info(
            "sandbox call %s in room %s failed: SIP %d %s (%s)",
            self.call_id,
            self.room.name,
            status.code,
            status.reason,
            DisconnectReason.Name(reason),
            extra={"call_id": self.room.name},
        )
        self.left_at = time.monotonic()
        self.registry.leave(self.room, self.identity, reason)
        await self._finish_room_if_empty()

    async def _finish_room_if_empty(self) -> None:
        if self.room.participants:
            return
        await self._wait_until(self._elapsed + DEPARTURE_S)
        if not self.room.participants:
            self.registry.finish(self.room)
