"""Call statuses and the pure mapping from LiveKit webhook events to status changes.

A call moves `dialing -> ringing -> in_progress` and ends in exactly one final status.
Everything LiveKit tells us about the SIP participant (its `sip.callStatus` attribute, its
disconnect reason, a SIP status code) and about the room (`room_finished`, the room metadata
the agent sets for voicemail) is reduced to a `Signal`; `next_state` is one pure function from
(current state, signal) to the change to make, or None. A final status never moves again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum

from livekit.protocol import models

from common.contracts import (
    ANSWERED_SIP_STATUSES,
    ATTR_SIP_CALL_STATUS,
    ATTR_SIP_CALL_STATUS_CODE,
    MACHINE_VERDICTS,
    OUTCOME_CALLEE_SILENT,
    OUTCOME_FAILED,
    SIP_STATUS_ACTIVE,
    SIP_STATUS_RINGING,
    RoomMetadata,
)
from common.livekit.events import RoomEvent


class Status(StrEnum):
    DIALING = "dialing"
    RINGING = "ringing"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    FAILED = "failed"
    VOICEMAIL = "voicemail"
    CANCELED = "canceled"


FINAL_STATUSES = frozenset(
    {
        Status.COMPLETED,
        Status.BUSY,
        Status.NO_ANSWER,
        Status.FAILED,
        Status.VOICEMAIL,
        Status.CANCELED,
    }
)
LIVE_STATUSES = frozenset({Status.DIALING, Status.RINGING, Status.IN_PROGRESS})

# The SIP participant's attributes (common/contracts.py), under the names this module uses.
ATTR_CALL_STATUS = ATTR_SIP_CALL_STATUS
ANSWERED_CALL_STATUSES = ANSWERED_SIP_STATUSES
# A SIP final response code, where the SIP bridge (or our sandbox) reports one.
ATTR_STATUS_CODE = ATTR_SIP_CALL_STATUS_CODE

# Not a LiveKit event: the grace after an unanswered room_finished has run out.
GRACE_OVER = "room_finished_grace_over"

_BUSY_CODES = frozenset({486, 600, 603})
_NO_ANSWER_CODES = frozenset({408, 480, 487})
DROPPED_UNANSWERED = (
    "LiveKit's SIP service dropped the line before an answer (a trunk or network failure)"
)
NO_ANSWER_HEARD = "room finished before an answer"
# The callee answered and hung up on silence before any agent came (no worker registered as
# AGENT_NAME, or none free): read `completed`, a campaign never called them again, and the
# operator was told nothing, while a callee who waited AGENT_JOIN_TIMEOUT_S made it `failed`.
NO_AGENT_BEFORE_END = (
    "no agent joined the call before it ended (is an agent worker running, registered as"
    " AGENT_NAME, with room for another job?); the callee had answered and heard nobody"
)
# Added to the reason of an agent that failed on an answered call before it said a word
# (its room metadata's `spoke: false`): the call is `failed`, not `completed`.
# (Said nothing of the call's own: its apology for the failure, which the callee may have heard
# since 37416ad, is not a turn of the conversation.)
SAID_NOTHING = "; the callee had answered and the agent had not begun the conversation"
# The agent ended the call on the callee's silence (OUTCOME_CALLEE_SILENT).
CALLEE_SILENT = (
    "the callee said nothing, even when asked whether they were there: the agent said"
    " goodbye and ended the call"
)
# No participant_left of the callee came (LiveKit's webhooks lost in an outage, a room found
# gone unheard): busy, a trunk failure and no answer read alike, and no_answer is a guess.
NO_WORD = (
    "room finished before an answer, with no word from LiveKit of how its line ended (no"
    " participant_left of the callee came): no_answer is inferred; it may have been busy or"
    " failed"
)
# LiveKit's disconnect reason SIP_TRUNK_FAILURE, as a call's reason (_REASON_STATUS): the
# protocol's word for a line lost at the trunk; livekit/sip's classifyInviteError files under
# it the carrier's 5xx, a DNS, address or network error on the way to the trunk's address,
# and the trunk's calls-per-second or concurrent-call limit at the carrier.
TRUNK_FAILURE = "sip_trunk_failure"
_TRUNK_FAILURE_FAULT = (
    "check the trunk's address and transport, whether the carrier is up, and the trunk's"
    " limits at the carrier (calls per second, concurrent calls)"
)
HUNG_UP_BY_API = "hung up through the API"
HUNG_UP_FOR_DNC = "hung up: its number was put on the do-not-call list while it rang"
# The calls.hangup_requested mark of a hang-up for the do-not-call list (1: through the API).
HANGUP_FOR_DNC = 2

_REASON_STATUS = {
    "USER_REJECTED": Status.BUSY,
    "USER_UNAVAILABLE": Status.NO_ANSWER,
    "SIP_TRUNK_FAILURE": Status.FAILED,
}


@dataclass(frozen=True)
class CallState:
    """What the mapping needs to know about a call."""

    status: Status
    answered: bool = False
    hangup_requested: bool = False
    room_finished: bool = False
    """The room is gone; the outcome waits only for late evidence of an answer (a grace)."""
    amd: str | None = None
    """The agent's answering-machine verdict (human, machine-vm, ...), once it reported one."""
    dialled: bool = True
    """The dial was recorded as started. A call never dialled is settled by the reaper, as
    such ("nobody was called", its Idempotency-Key freed), whatever its room does."""
    callee_left: bool = False
    """The callee's participant left the room (the call ends with its room_finished)."""
    agent_seen: bool = True
    """An agent of ours showed itself in the call (a report, its participant joining or
    leaving), as far as the server knows when it decides. An answered call with none ends
    `failed` (NO_AGENT_BEFORE_END) once its room finished and the grace found none either."""
    hangup_for_dnc: bool = False
    """The hang-up was asked for because the call's number was put on the do-not-call list
    (POST /dnc, or an agent's do_not_call report on another call), not through its own."""

    @property
    def hangup_reason(self) -> str:
        """The reason of a call its hang-up cancels."""
        return HUNG_UP_FOR_DNC if self.hangup_for_dnc else HUNG_UP_BY_API


@dataclass(frozen=True)
class Signal:
    """One webhook event, reduced to what decides a call's status."""

    event: str
    room: str
    sip_participant: bool = False
    sip_call_status: str | None = None
    disconnect_reason: str | None = None
    sip_status_code: int | None = None
    room_outcome: str | None = None
    room_reason: str | None = None
    room_spoke: bool | None = None
    """With the agent's failure: whether it had said a turn to the callee (None: not told)."""


@dataclass(frozen=True)
class Change:
    """The status to move to, why, and whether the callee has now answered; `ended_by`, who
    ended the call when the server itself did (an agent's final report, if one still comes,
    says its own)."""

    status: Status
    reason: str | None = None
    answered: bool = False
    ended_by: str | None = None
    no_report: bool = False
    """No agent can report on the call (none was dispatched to it, or none joined it): a
    final change shows its report `unavailable` at once rather than after REPORT_WAIT_S."""


# SIP answers that blame the trunk, not the callee: the carrier refused the trunk's
# credentials (401, 407), refused the trunk's account or the caller number it sends (403), or
# failed itself (5xx), and a line LiveKit's SIP service dropped unanswered (DROPPED_UNANSWERED:
# how the bridge reports a carrier's 5xx, a network or DNS error). One such call is a status;
# every call so is a trunk to fix.
_TRUNK_FAULTS = {
    401: "the carrier refused the trunk's credentials: check its username and password",
    407: "the carrier refused the trunk's credentials: check its username and password",
    403: (
        "the carrier refused the call: check the trunk's credentials, its account (credit,"
        " the destinations it may call) and the caller number it sends"
    ),
}
_SIP_REASON = re.compile(r"SIP ([1-6][0-9]{2})")


def trunk_fault(reason: str | None) -> str | None:
    """What a call's `reason` (`SIP 403`) says of the outbound trunk, if it blames the trunk
    rather than the callee; else None (pure)."""
    if reason == DROPPED_UNANSWERED:
        return "check the trunk's address and transport, and whether the carrier is up"
    if reason == TRUNK_FAILURE:
        return _TRUNK_FAILURE_FAULT
    match = _SIP_REASON.fullmatch(reason or "")
    if match is None:
        return None
    code = int(match.group(1))
    if 500 <= code <= 599:
        return "the carrier or the trunk failed"
    return _TRUNK_FAULTS.get(code)


def status_for_sip_code(code: int) -> Status | None:
    """486/600/603 busy; 408/480/487 no answer; any other 4xx-6xx failed; else unknown."""
    if code in _BUSY_CODES:
        return Status.BUSY
    if code in _NO_ANSWER_CODES:
        return Status.NO_ANSWER
    if 400 <= code <= 699:
        return Status.FAILED
    return None


def signal_from_event(event: RoomEvent) -> Signal:
    """Reduce a verified LiveKit webhook event to a Signal (pure)."""
    participant = event.participant
    sip = participant is not None and participant.kind == models.ParticipantInfo.Kind.SIP
    code: int | None = None
    call_status: str | None = None
    reason: str | None = None
    if participant is not None and sip:
        attrs = participant.attributes
        call_status = attrs.get(ATTR_CALL_STATUS) or None
        raw_code = attrs.get(ATTR_STATUS_CODE, "")
        # a SIP code has three digits; a longer run is none (int() of 4,301 was a 500)
        code = (
            int(raw_code)
            if raw_code.isascii() and raw_code.isdigit() and len(raw_code) <= 3
            else None
        )
        if participant.disconnect_reason in models.DisconnectReason.values():
            # proto3 enums are open: a reason newer than our protocol package stays unknown
            reason = models.DisconnectReason.Name(participant.disconnect_reason) or None
            reason = None if reason == "UNKNOWN_REASON" else reason
    room = RoomMetadata.parse(event.room_metadata)
    return Signal(
        event=event.event,
        room=event.room_name,
        sip_participant=sip,
        sip_call_status=call_status,
        disconnect_reason=reason,
        sip_status_code=code,
        room_outcome=room.outcome,
        room_reason=room.reason,
        room_spoke=room.spoke,
    )


def _left_unanswered(signal: Signal) -> Change | None:
    """The callee's leg ended before anyone answered: say why, if LiveKit told us."""
    if signal.sip_status_code is not None:
        status = status_for_sip_code(signal.sip_status_code)
        if status is not None:
            return Change(status, f"SIP {signal.sip_status_code}")
    if signal.disconnect_reason in _REASON_STATUS:
        return Change(_REASON_STATUS[signal.disconnect_reason], signal.disconnect_reason.lower())
    if signal.event == "participant_connection_aborted":
        return Change(Status.FAILED, "connection aborted")
    if signal.disconnect_reason == "CLIENT_INITIATED":
        # LiveKit's SIP bridge gives an unanswered leg a reason only for a SIP rejection
        # (USER_REJECTED) or no answer (USER_UNAVAILABLE, its ringing timeout included); a leg
        # it drops (a carrier's 5xx, a network or DNS error) leaves with none, which LiveKit
        # records as CLIENT_INITIATED (livekit/sip pkg/sip/errors.go classifyInviteError,
        # participant.go CallStatus.DisconnectReason; livekit/livekit signalhandler.go).
        return Change(Status.FAILED, DROPPED_UNANSWERED)
    return None  # room_finished will settle it


def next_state(state: CallState, signal: Signal) -> Change | None:
    """The change `signal` makes to a call in `state`, or None (pure, table-tested).

    `room_finished` settles a call at once when its end is known (voicemail, hung up through
    the API, answered). An unanswered one waits: the event that shows the answer may be late
    or lost and retried, so the call settles `no_answer` only on GRACE_OVER, and an answer
    signal arriving before that wins.
    """
    if state.status in FINAL_STATUSES:
        return None
    if signal.event in ("room_finished", GRACE_OVER):
        # An agent that failed after it found voicemail (its message, if it had one to leave,
        # not left) keeps the outcome and says the failure as its reason: the reason.
        failed = signal.room_reason if signal.room_outcome == Status.VOICEMAIL else None
        if state.amd in MACHINE_VERDICTS:
            return Change(Status.VOICEMAIL, failed or state.amd, answered=state.answered)
        if signal.room_outcome == Status.VOICEMAIL:
            reason = failed or "answering machine"
            return Change(Status.VOICEMAIL, reason, answered=state.answered)
        if state.hangup_requested:
            return Change(Status.CANCELED, state.hangup_reason)
        if signal.room_outcome == OUTCOME_FAILED and state.dialled:  # the agent failed
            # Why, in either case; answered, it stays `completed`: somebody talked to the
            # agent, and as `failed` a campaign retrying failures would call them again. Unless
            # the agent failed before it said a word (a provider refusing its key, its credits
            # spent, down): the callee answered to silence and a hang-up, as when no agent
            # comes (NO_AGENT_BEFORE_END), and nothing the call was for reached them.
            reason = signal.room_reason or "the agent failed"
            if state.answered and signal.room_spoke is False:
                return Change(Status.FAILED, f"{reason}{SAID_NOTHING}", answered=True)
            if state.answered:
                return Change(Status.COMPLETED, reason, answered=True)
            return Change(Status.FAILED, reason)
        if signal.room_outcome == OUTCOME_CALLEE_SILENT and state.dialled:
            # A failure after the goodbye (the hang-up's) is its reason, as for voicemail. The
            # agent records it only on a line it greeted and asked whether they were there:
            # answered, also when no answer signal has come (the agent's `answered` report
            # retried, the callee's participant_left lost). Left to the grace, the call was
            # no_answer, or completed without this reason once a late answer came.
            reason = signal.room_reason or CALLEE_SILENT
            return Change(Status.COMPLETED, reason, answered=True)
        if state.answered and not state.agent_seen:
            # No agent came, as far as known: its late reports (retried after an outage)
            # have the grace to show it did; none by then, nobody talked to the callee.
            if signal.event == GRACE_OVER:
                return Change(Status.FAILED, NO_AGENT_BEFORE_END, no_report=True)
            return None
        if state.answered:
            return Change(Status.COMPLETED)
        if not state.dialled:  # its room (the agent's dispatch) ended: nobody was rung
            return None
        if signal.event == GRACE_OVER:
            return Change(Status.NO_ANSWER, NO_ANSWER_HEARD if state.callee_left else NO_WORD)
        return None
    if not signal.sip_participant:
        return None
    if signal.event == "participant_joined":
        return _progress(state, signal.sip_call_status)
    if signal.event in ("participant_left", "participant_connection_aborted"):
        # LiveKit sends no webhook when a call is answered; the SIP participant's last
        # `sip.callStatus` tells: "active"/"hangup" after an answer, "dialing"/"ringing" if not.
        if state.answered or signal.sip_call_status in ANSWERED_CALL_STATUSES:
            return None if state.answered else _answered(state)
        if state.hangup_requested:
            return None  # room_finished settles canceled
        return _left_unanswered(signal)
    if signal.sip_call_status == SIP_STATUS_ACTIVE:  # any other event showing an answer
        return _progress(state, SIP_STATUS_ACTIVE)
    return None


# LiveKit ends a line at its max_call_duration, counted from the dial (ringing included:
# livekit/sip's DialAsync runs the dial and the call under one timeout), and says of it what
# it says of a callee's hang-up (CLIENT_INITIATED). An answered call that ended this close to
# its limit after its dial was cut by it (webhooks' times are whole seconds; LiveKit starts
# its clock a little after our dial mark).
LIMIT_SLACK_S = 1.0
MAX_DURATION_REACHED = "max_duration_s reached"
MAX_DURATION_BEFORE_ANSWER = "max_duration_s reached before an answer"


def limit_reason(change: Change, since_dial_s: float | None, max_duration_s: object) -> Change:
    """`change` with the reason "max_duration_s reached" when it completes a call that ended
    `since_dial_s` after its dial, at its limit, and nothing else said why; and `no_answer`
    (that limit reached while it rang) for a line dropped unanswered at its limit: LiveKit cuts
    a ringing line at `max_call_duration` as it cuts an answered one (CLIENT_INITIATED), which
    alone reads as a trunk failure (a request may ring up to 120 s with a 30 s limit)."""
    if (
        since_dial_s is None
        or not isinstance(max_duration_s, int | float)
        or since_dial_s < max_duration_s - LIMIT_SLACK_S
    ):
        return change
    if change.status is Status.FAILED and change.reason == DROPPED_UNANSWERED:
        return replace(change, status=Status.NO_ANSWER, reason=MAX_DURATION_BEFORE_ANSWER)
    if change.status is not Status.COMPLETED or change.reason is not None:
        return change
    return replace(change, reason=MAX_DURATION_REACHED)


def answer_reported(state: CallState) -> Change | None:
    """The agent reported the answer (the moment sip.callStatus became active)."""
    if state.status in FINAL_STATUSES or state.answered:
        return None
    return _answered(state)


def _answered(state: CallState) -> Change:
    """The callee answered; if the room has already finished, the call is over too (a
    voicemail if the agent's verdict, in before the answer, said a machine took it)."""
    if state.room_finished:
        if state.amd in MACHINE_VERDICTS:
            return Change(Status.VOICEMAIL, state.amd, answered=True)
        if not state.agent_seen:  # the room's grace, still running, decides (next_state)
            return Change(Status.IN_PROGRESS, answered=True)
        return Change(Status.COMPLETED, "answer reported after the room finished", answered=True)
    return Change(Status.IN_PROGRESS, answered=True)


def _progress(state: CallState, call_status: str | None) -> Change | None:
    if call_status == SIP_STATUS_ACTIVE and not state.answered:
        return _answered(state)
    if call_status == SIP_STATUS_RINGING and state.status == Status.DIALING:
        return Change(Status.RINGING)
    return None
