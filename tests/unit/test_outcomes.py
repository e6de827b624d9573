"""The pure mapping from LiveKit webhook events to call status changes (DESIGN.md "Outcomes")."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable

import pytest
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models, webhook

from common.calls.outcomes import (
    ATTR_CALL_STATUS,
    ATTR_STATUS_CODE,
    CALLEE_SILENT,
    DROPPED_UNANSWERED,
    FINAL_STATUSES,
    GRACE_OVER,
    LIVE_STATUSES,
    NO_WORD,
    CallState,
    Change,
    Signal,
    Status,
    limit_reason,
    next_state,
    signal_from_event,
    status_for_sip_code,
    trunk_fault,
)
from common.calls.service import NEVER_DIALLED as NOBODY_CALLED
from common.livekit.events import RoomEvent

ROOM = "call-0123456789ab"

# ------------------------------------------------------------------ signal builders


def finished(outcome: str | None = None) -> Signal:
    return Signal("room_finished", ROOM, room_outcome=outcome)


def grace_over() -> Signal:
    return Signal(GRACE_OVER, ROOM)


def joined(call_status: str | None, *, sip: bool = True) -> Signal:
    return Signal("participant_joined", ROOM, sip_participant=sip, sip_call_status=call_status)


def published(call_status: str | None = "active", *, sip: bool = True) -> Signal:
    return Signal("track_published", ROOM, sip_participant=sip, sip_call_status=call_status)


def left(
    reason: str | None = None,
    code: int | None = None,
    *,
    event: str = "participant_left",
    # LiveKit leaves sip.callStatus at "dialing"/"ringing" on a leg that was never answered
    # (a rejected or unanswered INVITE sets no "hangup" attribute); "hangup" follows an answer.
    call_status: str | None = "ringing",
    sip: bool = True,
) -> Signal:
    return Signal(
        event,
        ROOM,
        sip_participant=sip,
        sip_call_status=call_status,
        disconnect_reason=reason,
        sip_status_code=code,
    )


def aborted(
    reason: str | None = None, code: int | None = None, call_status: str | None = None
) -> Signal:
    return left(reason, code, event="participant_connection_aborted", call_status=call_status)


DIALING = CallState(Status.DIALING)
NEVER_DIALLED = CallState(Status.DIALING, dialled=False)
RINGING = CallState(Status.RINGING)
ANSWERED = CallState(Status.IN_PROGRESS, answered=True)
HANGUP_UNANSWERED = CallState(Status.RINGING, hangup_requested=True)
FINISHED_RINGING = CallState(Status.RINGING, room_finished=True)
HANGUP_ANSWERED = CallState(Status.IN_PROGRESS, answered=True, hangup_requested=True)

# ------------------------------------------------------------------ the table

TABLE: list[tuple[str, CallState, Signal, Change | None]] = [
    # room_finished settles the outcome
    (
        "finished-voicemail-answered",
        ANSWERED,
        finished("voicemail"),
        Change(Status.VOICEMAIL, "answering machine", answered=True),
    ),
    (
        "finished-voicemail-unanswered",
        RINGING,
        finished("voicemail"),
        Change(Status.VOICEMAIL, "answering machine", answered=False),
    ),
    (
        "finished-voicemail-beats-hangup",
        HANGUP_ANSWERED,
        finished("voicemail"),
        Change(Status.VOICEMAIL, "answering machine", answered=True),
    ),
    (
        "finished-hangup-answered",
        HANGUP_ANSWERED,
        finished(),
        Change(Status.CANCELED, "hung up through the API"),
    ),
    (
        "finished-hangup-unanswered",
        HANGUP_UNANSWERED,
        finished(),
        Change(Status.CANCELED, "hung up through the API"),
    ),
    ("finished-answered", ANSWERED, finished(), Change(Status.COMPLETED)),
    (
        "finished-callee-silent-answered",
        ANSWERED,
        finished("callee_silent"),
        Change(Status.COMPLETED, CALLEE_SILENT, answered=True),
    ),
    (
        "finished-hangup-beats-callee-silent",
        HANGUP_ANSWERED,
        finished("callee_silent"),
        Change(Status.CANCELED, "hung up through the API"),
    ),
    (
        "finished-other-outcome-answered",
        ANSWERED,
        finished("something-else"),
        Change(Status.COMPLETED),
    ),
    # never dialled (the dial could not be recorded, so it was not made): its room (the
    # agent's dispatch) ending rings nobody; the reaper settles it "nobody was called" and
    # frees its key. As no_answer, the key stayed bound to it for good.
    ("finished-never-dialled", NEVER_DIALLED, finished(), None),
    ("grace-over-never-dialled", NEVER_DIALLED, grace_over(), None),
    (
        "grace-over-never-dialled-hung-up",
        dataclasses.replace(NEVER_DIALLED, hangup_requested=True),
        grace_over(),
        Change(Status.CANCELED, "hung up through the API"),
    ),
    # unanswered: no guess yet; late evidence of an answer gets a grace (GRACE_OVER settles)
    ("finished-unanswered-dialing", DIALING, finished(), None),
    ("finished-unanswered-ringing", RINGING, finished(), None),
    # the callee's participant_left came (with a reason that settles nothing): no answer
    (
        "grace-over-unanswered-dialing",
        dataclasses.replace(DIALING, callee_left=True),
        grace_over(),
        Change(Status.NO_ANSWER, "room finished before an answer"),
    ),
    (
        "grace-over-unanswered-ringing",
        dataclasses.replace(RINGING, callee_left=True),
        grace_over(),
        Change(Status.NO_ANSWER, "room finished before an answer"),
    ),
    # none came (lost in an outage): busy or a trunk failure would read alike, and the
    # reason says no_answer is inferred (it read as a known no answer)
    ("grace-over-unheard-dialing", DIALING, grace_over(), Change(Status.NO_ANSWER, NO_WORD)),
    ("grace-over-unheard-ringing", RINGING, grace_over(), Change(Status.NO_ANSWER, NO_WORD)),
    ("grace-over-answered", ANSWERED, grace_over(), Change(Status.COMPLETED)),
    (
        "late-answer-after-room-finished",
        FINISHED_RINGING,
        left("CLIENT_INITIATED", call_status="hangup"),
        Change(Status.COMPLETED, "answer reported after the room finished", answered=True),
    ),
    (
        "late-answer-after-room-finished-with-a-machine-verdict",
        dataclasses.replace(FINISHED_RINGING, amd="machine-vm"),
        left("CLIENT_INITIATED", call_status="hangup"),
        Change(Status.VOICEMAIL, "machine-vm", answered=True),
    ),
    ("late-unanswered-left-after-room-finished", FINISHED_RINGING, left(), None),
    (
        "late-busy-after-room-finished",
        FINISHED_RINGING,
        left("USER_REJECTED"),
        Change(Status.BUSY, "user_rejected"),
    ),
    # the SIP participant joins with its sip.callStatus
    ("joined-dialing", DIALING, joined("dialing"), None),
    ("joined-ringing-from-dialing", DIALING, joined("ringing"), Change(Status.RINGING)),
    ("joined-ringing-already-ringing", RINGING, joined("ringing"), None),
    ("joined-ringing-after-answer", ANSWERED, joined("ringing"), None),
    (
        "joined-active-from-dialing",
        DIALING,
        joined("active"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    (
        "joined-active-from-ringing",
        RINGING,
        joined("active"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    ("joined-active-already-answered", ANSWERED, joined("active"), None),
    ("joined-no-status", DIALING, joined(None), None),
    # the callee's audio track is the evidence of an answer
    (
        "track-from-ringing",
        RINGING,
        published(),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    (
        "track-from-dialing",
        DIALING,
        published(),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    ("track-already-answered", ANSWERED, published(), None),
    # the SIP bridge publishes its track while still dialing: that alone is no answer
    ("track-while-dialing-status", DIALING, published("dialing"), None),
    ("track-while-ringing-status", RINGING, published("ringing"), None),
    ("track-without-status", RINGING, published(None), None),
    # LiveKit sends no webhook on answer: the leaving participant's last status tells
    (
        "left-hangup-status-means-answered",
        RINGING,
        left("CLIENT_INITIATED", call_status="hangup"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    (
        "left-active-status-means-answered",
        DIALING,
        left(call_status="active"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    (
        "aborted-active-status-means-answered",
        RINGING,
        aborted(call_status="active"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    (
        "left-hangup-status-after-api-hangup",
        HANGUP_UNANSWERED,
        left("CLIENT_INITIATED", call_status="hangup"),
        Change(Status.IN_PROGRESS, answered=True),
    ),
    ("left-hangup-status-already-answered", ANSWERED, left(call_status="hangup"), None),
    ("left-dialing-status-no-reason", DIALING, left(call_status="dialing"), None),
    # disconnect reasons of an unanswered leg
    ("left-user-rejected", RINGING, left("USER_REJECTED"), Change(Status.BUSY, "user_rejected")),
    (
        "left-user-unavailable",
        RINGING,
        left("USER_UNAVAILABLE"),
        Change(Status.NO_ANSWER, "user_unavailable"),
    ),
    (
        "left-trunk-failure",
        DIALING,
        left("SIP_TRUNK_FAILURE"),
        Change(Status.FAILED, "sip_trunk_failure"),
    ),
    # LiveKit's SIP bridge leaves a leg it dropped (a trunk failure) with no reason, recorded
    # as CLIENT_INITIATED; a rejection or no answer has its own reason
    (
        "left-client-initiated-unanswered",
        RINGING,
        left("CLIENT_INITIATED"),
        Change(Status.FAILED, DROPPED_UNANSWERED),
    ),
    (
        "left-client-initiated-dialing",
        DIALING,
        left("CLIENT_INITIATED", call_status="dialing"),
        Change(Status.FAILED, DROPPED_UNANSWERED),
    ),
    ("left-no-reason-unanswered", RINGING, left(), None),
    (
        "aborted-user-rejected",
        RINGING,
        aborted("USER_REJECTED"),
        Change(Status.BUSY, "user_rejected"),
    ),
    (
        "aborted-user-unavailable",
        RINGING,
        aborted("USER_UNAVAILABLE"),
        Change(Status.NO_ANSWER, "user_unavailable"),
    ),
    (
        "aborted-trunk-failure",
        RINGING,
        aborted("SIP_TRUNK_FAILURE"),
        Change(Status.FAILED, "sip_trunk_failure"),
    ),
    # an aborted connection with no better explanation is a failure, not a silent None
    (
        "aborted-client-initiated",
        RINGING,
        aborted("CLIENT_INITIATED"),
        Change(Status.FAILED, "connection aborted"),
    ),
    ("aborted-no-reason", DIALING, aborted(), Change(Status.FAILED, "connection aborted")),
    # after an answer or an API hangup, leaving never decides: room_finished does
    ("left-rejected-after-answer", ANSWERED, left("USER_REJECTED"), None),
    ("left-486-after-answer", ANSWERED, left(code=486), None),
    ("left-client-initiated-after-answer", ANSWERED, left("CLIENT_INITIATED"), None),
    ("aborted-after-answer", ANSWERED, aborted(), None),
    ("left-rejected-after-hangup", HANGUP_UNANSWERED, left("USER_REJECTED"), None),
    ("aborted-after-hangup", HANGUP_UNANSWERED, aborted(), None),
    # the SIP status code wins over the disconnect reason
    (
        "left-code-wins-over-reason",
        RINGING,
        left("USER_UNAVAILABLE", 486),
        Change(Status.BUSY, "SIP 486"),
    ),
    (
        "left-code-200-falls-back-to-reason",
        RINGING,
        left("USER_REJECTED", 200),
        Change(Status.BUSY, "user_rejected"),
    ),
    ("left-code-200-no-reason", RINGING, left(code=200), None),
    (
        "aborted-code-200-still-aborted",
        RINGING,
        aborted(code=200),
        Change(Status.FAILED, "connection aborted"),
    ),
    # non-SIP participants (the agent, a monitor) never move a call
    ("agent-joined-active", DIALING, joined("active", sip=False), None),
    ("agent-joined-ringing", DIALING, joined("ringing", sip=False), None),
    ("agent-track", RINGING, published(sip=False), None),
    ("agent-left-rejected", RINGING, left("USER_REJECTED", sip=False), None),
    ("agent-aborted", RINGING, left(event="participant_connection_aborted", sip=False), None),
    ("agent-left-486", RINGING, left(code=486, sip=False), None),
    # events that say nothing about the callee
    ("room-started", DIALING, Signal("room_started", ROOM), None),
    ("sip-unknown-event", RINGING, Signal("egress_started", ROOM, sip_participant=True), None),
]

# SIP final responses of an unanswered leg: 486/600/603 busy, 408/480/487 no answer, others failed.
SIP_CODES: list[tuple[int, Status | None]] = [
    (486, Status.BUSY),
    (600, Status.BUSY),
    (603, Status.BUSY),
    (408, Status.NO_ANSWER),
    (480, Status.NO_ANSWER),
    (487, Status.NO_ANSWER),
    (404, Status.FAILED),
    (500, Status.FAILED),
    (503, Status.FAILED),
    (400, Status.FAILED),
    (699, Status.FAILED),
    (200, None),
    (183, None),
    (700, None),
]


@pytest.mark.parametrize(
    ("state", "signal", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE]
)
def test_next_state_table(state: CallState, signal: Signal, expected: Change | None) -> None:
    assert next_state(state, signal) == expected


@pytest.mark.parametrize(("code", "expected"), SIP_CODES)
def test_status_for_sip_code(code: int, expected: Status | None) -> None:
    assert status_for_sip_code(code) is expected


@pytest.mark.parametrize(("code", "expected"), SIP_CODES)
@pytest.mark.parametrize("event", ["participant_left", "participant_connection_aborted"])
def test_sip_code_decides_unanswered_leg(code: int, expected: Status | None, event: str) -> None:
    change = next_state(RINGING, left(code=code, event=event))
    if expected is not None:
        assert change == Change(expected, f"SIP {code}")
    elif event == "participant_left":
        assert change is None  # room_finished will settle it
    else:
        assert change == Change(Status.FAILED, "connection aborted")


# ------------------------------------------------------------------ final states never move

EVERY_SIGNAL: list[Signal] = [row[2] for row in TABLE] + [left(code=code) for code, _ in SIP_CODES]


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("answered", [False, True])
@pytest.mark.parametrize("hangup", [False, True])
def test_final_status_never_moves(status: Status, answered: bool, hangup: bool) -> None:
    state = CallState(status, answered=answered, hangup_requested=hangup)
    moved = {signal: change for signal in EVERY_SIGNAL if (change := next_state(state, signal))}
    assert moved == {}


def test_every_signal_moves_some_live_call() -> None:
    # Guards the test above: the signal list is not just inert signals.
    live_states = [DIALING, RINGING, ANSWERED, HANGUP_UNANSWERED]
    moving = [s for s in EVERY_SIGNAL if any(next_state(st, s) for st in live_states)]
    assert len(moving) >= 20
    assert {s.event for s in moving} >= {
        "room_finished",
        "participant_joined",
        "participant_left",
        "participant_connection_aborted",
        "track_published",
    }


def test_status_sets_partition_all_statuses() -> None:
    assert FINAL_STATUSES | LIVE_STATUSES == set(Status)
    assert not FINAL_STATUSES & LIVE_STATUSES
    assert LIVE_STATUSES == {Status.DIALING, Status.RINGING, Status.IN_PROGRESS}


# ------------------------------------------------------------------ out-of-order sequences


def apply(state: CallState, change: Change) -> CallState:
    return dataclasses.replace(
        state, status=change.status, answered=state.answered or change.answered
    )


def fold(signals: Iterable[Signal], state: CallState = DIALING) -> CallState:
    for signal in signals:
        if signal.event == "room_finished":  # the store records it before deciding
            state = dataclasses.replace(state, room_finished=True)
        change = next_state(state, signal)
        if change is not None:
            state = apply(state, change)
    return state


SEQUENCES: list[tuple[str, list[Signal], CallState, Status]] = [
    (
        "happy-path",
        [
            joined("dialing"),
            joined("ringing"),
            published(),
            left("CLIENT_INITIATED", call_status="hangup"),
            finished(),
        ],
        DIALING,
        Status.COMPLETED,
    ),
    (
        "rejected-before-joined",
        [left("USER_REJECTED"), joined("ringing"), published(), finished()],
        DIALING,
        Status.BUSY,
    ),
    (
        "hangup-left-before-track",
        [left("CLIENT_INITIATED", call_status="hangup"), published(), finished()],
        DIALING,
        Status.COMPLETED,
    ),
    (
        "early-track-then-rejected",
        [joined("dialing"), published("dialing"), left("USER_REJECTED"), finished()],
        DIALING,
        Status.BUSY,
    ),
    (
        "answer-seen-only-when-leaving",
        [joined("dialing"), left("CLIENT_INITIATED", call_status="hangup"), finished()],
        DIALING,
        Status.COMPLETED,
    ),
    (
        # an answer seen after the room finished (within the grace) wins over a guess
        "finished-before-everything",
        [finished(), joined("ringing"), published(), left("USER_REJECTED")],
        DIALING,
        Status.COMPLETED,
    ),
    (
        "finished-then-lost-events-then-grace",
        [joined("ringing"), finished(), grace_over()],
        DIALING,
        Status.NO_ANSWER,
    ),
    (
        "finished-then-late-answer-then-grace",
        [
            joined("ringing"),
            finished(),
            left("CLIENT_INITIATED", call_status="hangup"),
            grace_over(),
        ],
        DIALING,
        Status.COMPLETED,
    ),
    (
        "voicemail-after-answer",
        [joined("active"), left("CLIENT_INITIATED", call_status="hangup"), finished("voicemail")],
        DIALING,
        Status.VOICEMAIL,
    ),
    (
        "ringing-then-unavailable",
        [joined("ringing"), left("USER_UNAVAILABLE"), finished()],
        DIALING,
        Status.NO_ANSWER,
    ),
    (
        "busy-code-then-finished",
        [joined("ringing"), left(code=486), finished()],
        DIALING,
        Status.BUSY,
    ),
    (
        "api-hangup-while-ringing",
        [joined("ringing"), left("USER_REJECTED"), finished()],
        HANGUP_UNANSWERED,
        Status.CANCELED,
    ),
    (
        "late-ringing-after-answer-stays-answered",
        [published(), joined("ringing"), finished()],
        DIALING,
        Status.COMPLETED,
    ),
]


@pytest.mark.parametrize(
    ("signals", "start", "final"),
    [row[1:] for row in SEQUENCES],
    ids=[row[0] for row in SEQUENCES],
)
def test_out_of_order_sequences(signals: list[Signal], start: CallState, final: Status) -> None:
    assert fold(signals, start).status is final


def test_answered_sticks_through_a_sequence() -> None:
    state = fold([joined("ringing"), published()])
    assert state == CallState(Status.IN_PROGRESS, answered=True)
    # A second answer signal changes nothing.
    assert next_state(state, joined("active")) is None
    assert fold([finished()], state) == CallState(
        Status.COMPLETED, answered=True, room_finished=True
    )


def test_final_state_stays_after_any_later_signal() -> None:
    busy = fold([left("USER_REJECTED")])
    assert busy.status is Status.BUSY
    after = fold(EVERY_SIGNAL, busy)
    assert (after.status, after.answered) == (busy.status, busy.answered)


# ------------------------------------------------------------------ signal_from_event


def sip_participant(
    attributes: dict[str, str] | None = None,
    reason: int = models.DisconnectReason.UNKNOWN_REASON,
    kind: int = models.ParticipantInfo.Kind.SIP,
) -> models.ParticipantInfo:
    return models.ParticipantInfo(
        sid="PA_sip",
        identity="sip-callee",
        kind=kind,  # type: ignore[arg-type]
        attributes=attributes or {},
        disconnect_reason=reason,  # type: ignore[arg-type]
    )


def event(
    name: str,
    participant: models.ParticipantInfo | None = None,
    metadata: str = "",
) -> webhook.WebhookEvent:
    ev = webhook.WebhookEvent(event=name, id="EV_1", room=models.Room(name=ROOM, metadata=metadata))
    if participant is not None:
        ev.participant.CopyFrom(participant)
    return ev


def signal_of(ev: webhook.WebhookEvent) -> Signal:
    """The signal of `ev` as LiveKit posts it (protobuf JSON), parsed as the handler does."""
    return signal_from_event(RoomEvent.from_json(MessageToJson(ev).encode()))


def test_signal_from_sip_participant_event() -> None:
    participant = sip_participant(
        {ATTR_CALL_STATUS: "ringing", ATTR_STATUS_CODE: "486", "sip.phoneNumber": "+1234567890"},
        models.DisconnectReason.USER_REJECTED,
    )
    signal = signal_of(event("participant_left", participant))
    assert signal == Signal(
        event="participant_left",
        room=ROOM,
        sip_participant=True,
        sip_call_status="ringing",
        disconnect_reason="USER_REJECTED",
        sip_status_code=486,
        room_outcome=None,
    )
    assert next_state(RINGING, signal) == Change(Status.BUSY, "SIP 486")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (models.DisconnectReason.USER_REJECTED, Change(Status.BUSY, "user_rejected")),
        (models.DisconnectReason.USER_UNAVAILABLE, Change(Status.NO_ANSWER, "user_unavailable")),
        (models.DisconnectReason.SIP_TRUNK_FAILURE, Change(Status.FAILED, "sip_trunk_failure")),
        (models.DisconnectReason.CLIENT_INITIATED, Change(Status.FAILED, DROPPED_UNANSWERED)),
    ],
)
def test_disconnect_reason_from_protobuf(reason: int, expected: Change | None) -> None:
    signal = signal_of(event("participant_left", sip_participant(reason=reason)))
    assert signal.disconnect_reason == models.DisconnectReason.Name(reason)
    assert next_state(RINGING, signal) == expected


# A SIP leg the trunk failed (a carrier's 503), as LiveKit posts its participant_left: protojson
# (livekit/protocol webhook/url_notifier.go: protojson.Marshal, so lowerCamel names, enums by
# name, int64s as strings). livekit/sip pkg/sip/errors.go classifyInviteError gives a 5xx the
# status callDropped, whose DisconnectReason() (participant.go) is UNKNOWN_REASON and which sets
# no sip.callStatus (it stays "dialing"); livekit/livekit pkg/rtc/signalling/signalhandler.go
# records any leave reason but USER_UNAVAILABLE, USER_REJECTED and AGENT_ERROR as
# CLIENT_INITIATED. No SIP status code is in it (sip.callStatusCode is the sandbox's own).
LIVEKIT_TRUNK_FAILURE_LEFT = b"""{"event":"participant_left",
"room":{"sid":"RM_tG4fWm2Tq8Ha","name":"call-0123456789ab","emptyTimeout":300,
"departureTimeout":20,"creationTime":"1764928551","creationTimeMs":"1764928551123",
"enabledCodecs":[{"mime":"audio/opus"}],"numParticipants":1},
"participant":{"sid":"PA_x3Yb8Lq2kVwN","identity":"sip-call-0123456789ab","state":"DISCONNECTED",
"joinedAt":"1764928552","joinedAtMs":"1764928552004","name":"Callee","version":4,
"permission":{"canSubscribe":true,"canPublish":true,"canPublishData":true},"kind":"SIP",
"attributes":{"sip.callID":"SCL_9dX2pQ7rLmZa","sip.callStatus":"dialing",
"sip.phoneNumber":"+14155550503","sip.trunkID":"ST_mK3vR8sQ2nWp",
"sip.trunkPhoneNumber":"+14155550100"},"disconnectReason":"CLIENT_INITIATED"},
"id":"EV_k2M9wP4xQz7R","createdAt":"1764928553"}"""


def test_a_trunk_failure_as_livekit_reports_it_fails_the_call() -> None:
    """Before, it waited for room_finished and its grace and settled no_answer ("room finished
    before an answer"): a broken trunk read as callees who did not pick up."""
    signal = signal_from_event(RoomEvent.from_json(LIVEKIT_TRUNK_FAILURE_LEFT))
    assert (signal.sip_participant, signal.sip_call_status, signal.sip_status_code) == (
        True,
        "dialing",
        None,
    )
    assert next_state(DIALING, signal) == Change(Status.FAILED, DROPPED_UNANSWERED)


@pytest.mark.parametrize("call_status", ["dialing", "ringing", "active", "hangup"])
def test_call_status_attribute_is_read(call_status: str) -> None:
    signal = signal_of(
        event("participant_joined", sip_participant({ATTR_CALL_STATUS: call_status}))
    )
    assert signal.sip_participant is True
    assert signal.sip_call_status == call_status


def test_missing_attributes_and_unknown_reason_are_none() -> None:
    signal = signal_of(event("participant_joined", sip_participant()))
    assert signal.sip_participant is True
    assert signal.sip_call_status is None
    assert signal.sip_status_code is None
    assert signal.disconnect_reason is None  # UNKNOWN_REASON (0) is "no reason"


def test_empty_call_status_attribute_is_none() -> None:
    signal = signal_of(
        event("participant_joined", sip_participant({ATTR_CALL_STATUS: "", ATTR_STATUS_CODE: ""}))
    )
    assert signal.sip_call_status is None
    assert signal.sip_status_code is None


@pytest.mark.parametrize("raw", ["abc", "-486", "486 ", "4.86", "", "0486", "4" * 4301])
def test_non_numeric_status_code_is_ignored(raw: str) -> None:
    signal = signal_of(event("participant_left", sip_participant({ATTR_STATUS_CODE: raw})))
    assert signal.sip_status_code is None


def test_unicode_digit_status_code_does_not_raise() -> None:
    signal = signal_of(event("participant_left", sip_participant({ATTR_STATUS_CODE: "\u00b2"})))
    assert signal.sip_status_code is None


def test_unknown_disconnect_reason_number_does_not_raise() -> None:
    body = json.dumps(
        {
            "event": "participant_left",
            "id": "EV_2",
            "room": {"name": ROOM},
            "participant": {"kind": "SIP", "disconnectReason": 99},
        }
    )
    signal = signal_from_event(RoomEvent.from_json(body.encode()))
    assert signal.sip_participant is True
    assert next_state(RINGING, signal) is None  # room_finished settles it


@pytest.mark.parametrize(
    "kind",
    [
        models.ParticipantInfo.Kind.STANDARD,
        models.ParticipantInfo.Kind.AGENT,
        models.ParticipantInfo.Kind.EGRESS,
    ],
)
def test_non_sip_participant_attributes_are_not_read(kind: int) -> None:
    participant = sip_participant(
        {ATTR_CALL_STATUS: "active", ATTR_STATUS_CODE: "486"},
        models.DisconnectReason.USER_REJECTED,
        kind=kind,
    )
    for name in ("participant_joined", "track_published", "participant_left"):
        signal = signal_of(event(name, participant))
        assert signal == Signal(name, ROOM)
        assert next_state(RINGING, signal) is None


@pytest.mark.parametrize(
    ("call_status", "expected"),
    [("dialing", None), ("active", Change(Status.IN_PROGRESS, answered=True))],
)
def test_track_published_protobuf(call_status: str, expected: Change | None) -> None:
    ev = event("track_published", sip_participant({ATTR_CALL_STATUS: call_status}))
    ev.track.CopyFrom(models.TrackInfo(sid="TR_1", type=models.TrackType.AUDIO))
    assert next_state(DIALING, signal_of(ev)) == expected


def test_event_without_participant() -> None:
    signal = signal_of(event("room_started"))
    assert signal == Signal("room_started", ROOM)


@pytest.mark.parametrize(
    ("metadata", "outcome"),
    [
        ('{"outcome": "voicemail"}', "voicemail"),
        ('{"outcome": "voicemail", "other": 1}', "voicemail"),
        ("", None),
        ("{not json", None),
        ('"voicemail"', None),
        ('["voicemail"]', None),
        ('{"outcome": 5}', None),
        ('{"outcome": null}', None),
        ('{"result": "voicemail"}', None),
    ],
)
def test_room_metadata_outcome(metadata: str, outcome: str | None) -> None:
    signal = signal_of(event("room_finished", metadata=metadata))
    assert signal.room_outcome == outcome


def test_room_finished_with_voicemail_metadata_settles_voicemail() -> None:
    signal = signal_of(event("room_finished", metadata='{"outcome": "voicemail"}'))
    assert next_state(ANSWERED, signal) == Change(
        Status.VOICEMAIL, "answering machine", answered=True
    )


def test_room_finished_with_bad_metadata_still_settles() -> None:
    signal = signal_of(event("room_finished", metadata="{oops"))
    assert next_state(ANSWERED, signal) == Change(Status.COMPLETED)
    assert next_state(RINGING, signal) is None  # waits for the grace


def test_signal_from_json_webhook_body() -> None:
    # The wire form LiveKit posts (protobuf JSON with enum names), parsed as the handler does.
    body = json.dumps(
        {
            "event": "participant_joined",
            "id": "EV_3",
            "room": {"name": ROOM},
            "participant": {
                "identity": "sip-callee",
                "kind": "SIP",
                "attributes": {"sip.callStatus": "ringing"},
            },
        }
    )
    signal = signal_from_event(RoomEvent.from_json(body.encode()))
    assert signal == Signal("participant_joined", ROOM, True, "ringing")
    assert next_state(DIALING, signal) == Change(Status.RINGING)


def test_the_reaper_never_settles_a_dialled_call_as_nobody_called() -> None:
    """A server stalled past the placement bound goes on and dials; the reaper, which found
    the call undialled a moment before, must leave it (it was settled "nobody was called"
    and its key freed: a retry rang the person again)."""
    from common.calls.service import _never_dialled

    assert _never_dialled(CallState(Status.DIALING, dialled=True)) is None
    assert _never_dialled(CallState(Status.DIALING, dialled=False)) == Change(
        Status.FAILED, NOBODY_CALLED
    )
    assert _never_dialled(CallState(Status.DIALING, hangup_requested=True, dialled=False)) == (
        Change(Status.CANCELED, "hung up through the API")
    )
    assert _never_dialled(CallState(Status.FAILED, dialled=False)) is None


@pytest.mark.parametrize(
    ("change", "since_dial_s", "limit", "reason"),
    [
        (Change(Status.COMPLETED), 599.2, 600, "max_duration_s reached"),
        (Change(Status.COMPLETED), 601.0, 600, "max_duration_s reached"),
        (Change(Status.COMPLETED), 598.0, 600, None),  # hung up two seconds before
        (Change(Status.COMPLETED), None, 600, None),  # never dialled (an older record)
        (Change(Status.COMPLETED), 600.0, None, None),  # no limit known (an older record)
        (Change(Status.COMPLETED, "answer reported after the room finished"), 600.0, 600, "k"),
        (Change(Status.VOICEMAIL, "machine-vm"), 600.0, 600, "machine-vm"),
    ],
)
def test_a_completed_call_that_ended_at_its_limit_after_its_dial_was_cut_by_it(
    change: Change, since_dial_s: float | None, limit: int | None, reason: str | None
) -> None:
    kept = change.reason if reason == "k" else reason
    assert limit_reason(change, since_dial_s, limit).reason == kept


def test_a_line_dropped_unanswered_at_its_limit_rang_out_rather_than_failed() -> None:
    """A request may ring up to 120 s with a 30 s max_duration_s: LiveKit cuts the ringing
    line at its max_call_duration, leaving CLIENT_INITIATED as for a trunk failure (see the
    comment above LIMIT_SLACK_S), so the call read `failed`, "dropped the line ... (a trunk
    or network failure)". At its limit it is `no_answer`; before it, still a drop."""
    from common.calls.outcomes import DROPPED_UNANSWERED

    dropped = Change(Status.FAILED, DROPPED_UNANSWERED)
    cut = limit_reason(dropped, 30.4, 30)
    assert (cut.status, cut.reason) == (Status.NO_ANSWER, "max_duration_s reached before an answer")
    assert limit_reason(dropped, 12.0, 30) == dropped
    assert limit_reason(dropped, None, 30) == dropped  # a scaled sandbox: nothing to say
    busy = Change(Status.BUSY, "user_rejected")
    assert limit_reason(busy, 30.4, 30) == busy


def test_the_limits_reason_keeps_who_ended_the_call() -> None:
    """A decision that says who ended the call (the server, its agent gone) keeps it when
    the limit names the reason (it was a new Change of status, reason and answer alone)."""
    change = Change(Status.COMPLETED, None, answered=True, ended_by="system")
    cut = limit_reason(change, 600.0, 600)
    assert (cut.reason, cut.answered, cut.ended_by) == ("max_duration_s reached", True, "system")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # The agent failed while the phone rang (it hung up): not "no_answer" after the grace.
        (RINGING, Change(Status.FAILED, "the agent's session failed: tts")),
        # ... on an answered call: completed (a campaign retrying failures would call again),
        # but saying why.
        (ANSWERED, Change(Status.COMPLETED, "the agent's session failed: tts", answered=True)),
        # A hang-up through the API stays a cancel; a call never dialled, the reaper's.
        (HANGUP_UNANSWERED, Change(Status.CANCELED, "hung up through the API")),
        (NEVER_DIALLED, None),
    ],
)
def test_room_finished_with_the_agents_failure_settles_failed(
    state: CallState, expected: Change | None
) -> None:
    metadata = '{"outcome": "failed", "reason": "the agent\'s session failed: tts"}'
    signal = signal_of(event("room_finished", metadata=metadata))
    assert (signal.room_outcome, signal.room_reason) == (
        "failed",
        "the agent's session failed: tts",
    )
    assert next_state(state, signal) == expected
    no_reason = signal_of(event("room_finished", metadata='{"outcome": "failed"}'))
    if expected is not None and expected.reason == "the agent's session failed: tts":
        assert next_state(state, no_reason) == Change(
            expected.status, "the agent failed", answered=expected.answered
        )


def test_a_room_reason_is_kept_as_text_every_database_can_hold() -> None:
    raw = '{"outcome": "failed", "reason": "bad\\u0000\\nline \\ud800' + "x" * 300 + '"}'
    reason = signal_of(event("room_finished", metadata=raw)).room_reason
    assert reason is not None and len(reason) == 200
    assert "\x00" not in reason and "\n" not in reason and reason.startswith("bad")
    reason.encode()  # no lone surrogate left


@pytest.mark.parametrize(
    ("reason", "blames_the_trunk"),
    [
        ("SIP 401", True),
        ("SIP 403", True),
        ("SIP 407", True),
        ("SIP 500", True),
        ("SIP 503", True),
        (DROPPED_UNANSWERED, True),
        ("SIP 486", False),  # busy: the callee
        ("SIP 404", False),  # no such number: the client's data
        ("SIP 480", False),
        ("SIP 4031", False),
        ("sip 503", False),
        ("connection aborted", False),
        (None, False),
    ],
)
def test_trunk_faults_are_the_answers_that_blame_the_trunk(
    reason: str | None, blames_the_trunk: bool
) -> None:
    assert (trunk_fault(reason) is not None) is blames_the_trunk
