"""The life of a call on our side: admit and place it, follow LiveKit's events, hang up, reap.

`CallService` ties the config store, the call store, the LiveKit client and the event
dispatcher together; the HTTP handlers (and the campaign scheduler) only parse and shape
around it. Every status change goes through `_settle`, whose transaction writes the change's
events to the outbox; once it commits, the events go to the dispatcher's subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import socket
import time
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from typing import Any

import aiofiles.os
from aiohttp.abc import AbstractResolver
from livekit import api
from livekit.protocol import models
from yarl import URL

from common.background import SlowSteps
from common.calls.admission import Admission, Placement, refusal_error
from common.calls.errors import (
    CallAlreadyOver,
    CallOnAnotherSandbox,
    CallsJustEnded,
    CallsStillLive,
    FieldError,
    InvalidCall,
    OnDoNotCallList,
    UnknownCall,
)
from common.calls.events import CALL_ANSWERED, CALL_ENDED, STATUS_EVENTS, EventDispatcher
from common.calls.models import (
    Applied,
    AttemptRef,
    CallEvent,
    CallRecord,
    Decide,
    Erasure,
    LostCall,
    NewCall,
    StoredAnswer,
)
from common.calls.outcomes import (
    FINAL_STATUSES,
    GRACE_OVER,
    NO_AGENT_BEFORE_END,
    CallState,
    Change,
    Signal,
    Status,
    next_state,
    signal_from_event,
    status_for_sip_code,
    trunk_fault,
)
from common.calls.phone import erased_forms
from common.calls.request import OutboundCall
from common.calls.runs import Subscriber, warn_of_runs
from common.config_store.model import DEFAULT_INSTRUCTIONS
from common.config_store.store import (
    ConfigStore,
    ConfigWriteError,
    UnknownCallError,
    latest_written_by,
    names_someone,
)
from common.contracts import ATTR_AGENT_NAME, AgentReport
from common.descriptors import OutOfDescriptors, descriptors_exhausted, out_of_descriptors
from common.livekit.client import (
    LiveKitError,
    LiveKitOverLimit,
    LiveKitTimeout,
    LiveKitUnavailable,
    dial,
    dispatch_agent,
    end_room,
    room_presence,
    rooms_alive,
)
from common.livekit.events import EventParticipant, RoomEvent
from common.masking import mask_phone, redact
from common.metrics import Metrics
from common.notify.guard import (
    CHECK_DNS,
    AddressRefused,
    LookupsBusy,
    PooledResolver,
    UnsafeWebhookUrl,
    resolve_public,
)
from common.repeats import Outage, Repeats, say_held_back_at_stop
from common.settings import Settings, owner_parts, reachable
from common.storage.base import (
    AttemptWithdrawn,
    CallIdTaken,
    CallStore,
    CommitUnknown,
    DatabaseError,
    ErasureHeldUp,
    ErasureUnfinished,
    KeyTaken,
    Placer,
    Refused,
    WindowClosed,
    asking_for_a_new_call,
)
from common.storage.campaign_programs import (
    LISTED_BEFORE_DIAL,
    PAUSED_BEFORE_DIAL,
    UPLOAD_GIVEN_UP_S,
    WINDOW_CLOSED_BEFORE_DIAL,
)
from common.storage.programs import (
    AGENT_IN_CALL_DETAIL,
    AGENT_JOINED_DETAIL,
    AGENT_LEFT_DETAIL,
    LATE_FINISH_S,
    REPORTS_RETRY_S,
    happened_at,
)

logger = logging.getLogger(__name__)

# Told of LiveKit's over-limit refusal of a placement as it comes, before the call is settled
# failed: that ends a campaign's attempt and wakes its driver, which placed its next
# recipient before the refusal reached the scheduler's hold (two refused requests a hold, not
# one, with LiveKit 0.1 s away). The campaign scheduler sets it for its placements.
OVER_LIMIT_HEARD: contextvars.ContextVar[Callable[[LiveKitOverLimit], None] | None] = (
    contextvars.ContextVar("over_limit_heard", default=None)
)

CALL_ID_PREFIX = "call-"
REAPER_MARGIN_S = 60.0
# A reaper pass still running after this long is said (a WARNING, with where it waits): the
# next pass waits for it, and with it the settling of every stuck call.
REAPER_SLOW_S = 120.0
# A placement lasts at most a config write, a database write and one LiveKit request before
# its dial starts (each request bounded by REQUEST_TIMEOUT_S): older undialled calls are dead.
PLACEMENT_BOUND_S = 60.0
# A config record written this long ago whose call the database does not know is an orphan
# (the row follows the record within a request: LiveKit's timeouts bound that request).
UNRECORDED_CONFIG_GRACE_S = 60.0
# A call's row is recorded within this long of its config.json write (the write first, then
# the row: a database slow to answer holds it up to its own bounds, 10-15 s), and at most this
# many calls of one server are recorded in that time and looked at (several placed alike).
LATEST_RECORDED_WITHIN_S = 60.0
LATEST_CANDIDATES = 100
# This many calls in a row ended busy (none otherwise) is a WARNING that the trunk may be
# refused by its carrier (`warn_of_busy_runs`): a callee's busy line is a call in 10 or 20.
BUSY_RUN_WARN = 10
# Stopping, room deletions of calls that failed to place get this long to finish.
ROOM_CLOSE_WAIT_S = 5.0
CLOSE_ROOM = "close-room-"  # the name of a room deletion's task, before the call id
# A deletion LiveKit refused as over a limit of its own is asked again after these pauses
# (about a ringing timeout in all): the room of a dial that may have rung is what stops it.
CLOSE_ROOM_RETRY_S = (1.0, 2.0, 4.0, 8.0, 15.0)
# Nor can one be "being placed" if it is dated this far ahead (config.json's writers share
# this machine's clock: a hand edit, or a clock stepped back); it was never pruned.
FUTURE_CONFIG_SKEW_S = 60.0
# Dispatched outbox events are kept this long (for inspection and redelivery: the webhook
# retry ladder lasts about a day and a half), then purged by the reaper.
EVENT_RETENTION_S = 7 * 86400.0
WEBHOOK_DNS_TIMEOUT_S = 3.0
# A call's row whose COMMIT lost its answer (the connection broke): how long to ask the
# database whether it was written, and how often, before the request is refused.
COMMIT_CHECK_S = 5.0
COMMIT_CHECK_POLL_S = 0.25
# A call dialled this long ago whose room_finished never came is looked for in LiveKit by the
# reaper: LiveKit gives up a webhook after a few retries (about 15 s), so a database outage
# longer than that lost the event, and the call stayed live until the reaper's bound (ringing
# timeout + longest call + margin: 11.5 min by default), then settled failed: a completed
# call reported as failed, and counted against CALLS_MAX_ACTIVE meanwhile.
ROOM_CHECK_AFTER_S = 60.0
ERASE_BATCH = 200  # calls whose conversation is erased in one transaction
ERASE_BUDGET_S = 1.0  # of each reaper pass, at most, for erasing
PURGE_BATCH = 2000  # old events (and as many deliveries) dropped in one transaction
PURGE_BUDGET_S = 1.0  # of each reaper pass, at most, for dropping old events
# An erasure refused because a campaign call it covers has just ended (its campaign records
# the end from its call.ended event, a few ms later; seconds if that fails and is retried):
# tried again this long, every ERASE_ENDING_POLL_S, before it is answered 409, Retry-After.
ERASE_ENDING_WAIT_S = 2.0
ERASE_ENDING_POLL_S = 0.1
# The wall clock's lead over the monotonic clock may drift this much (NTP slewing) before it
# is taken for a step.
STEP_TOLERANCE_S = 1.0
MAX_STEPS = 16  # the clock's steps kept apart (each a condition of the reaper's query)
# The event id of a room found gone: one per call, so servers sweeping at once apply it once.
ROOM_GONE_EVENT_PREFIX = "room-gone-"
# SIP statuses of a dial to a number that does not exist (Not Found, Address Incomplete,
# Does Not Exist Anywhere).
_NO_SUCH_NUMBER_CODES = frozenset({404, 484, 604})
# LiveKit events that say a call's room is up; for a call that is over, its room is ended.
ROOM_ALIVE_EVENTS = frozenset({"room_started", "participant_joined", "track_published"})
# LiveKit events that say a participant's leg is over (for the SIP participant: the callee's).
CALLEE_GONE_EVENTS = frozenset({"participant_left", "participant_connection_aborted"})


def new_call_id() -> str:
    return f"{CALL_ID_PREFIX}{secrets.token_hex(6)}"


# How many ids a placement draws before it gives up (each one taken by an earlier call).
CALL_ID_DRAWS = 3


@dataclass(frozen=True)
class Placed:
    """The outcome of `place`: a call placed now, or the call an Idempotency-Key is bound to."""

    call: CallRecord | None = None
    bound: StoredAnswer | None = None


def _fixed(change: Change) -> Decide:
    """A decision that applies `change` unless the call is already over."""

    def decide(state: CallState) -> Change | None:
        return None if state.status in FINAL_STATUSES else change

    return decide


def _failed(
    reason: str,
    no_report: bool = False,
    status: Status = Status.FAILED,
    *,
    unless_shown_taken: bool = False,
) -> Decide:
    """The call could not be placed: failed (or `status`: busy, no_answer, as the SIP status
    LiveKit answered the dial with says), or canceled if a hang-up came first.
    `no_report`: no agent was dispatched to it (Change.no_report). `unless_shown_taken`: a
    dial whose answer was lost (a timeout, a dropped connection) is no failure once LiveKit's
    or the agent's events showed the line ringing or answered (_dial_shown_taken)."""

    def decide(state: CallState) -> Change | None:
        if state.status in FINAL_STATUSES:
            return None
        if state.hangup_requested:
            return Change(Status.CANCELED, state.hangup_reason, no_report=no_report)
        if unless_shown_taken and _dial_shown_taken(state):
            return None
        return Change(status, reason, no_report=no_report)

    return decide


def _dial_shown_taken(state: CallState) -> bool:
    """LiveKit took the call's dial: its events (or the agent's reports) showed the line
    ringing or answered."""
    return state.answered or state.status in (Status.RINGING, Status.IN_PROGRESS)


def _grace_over(state: CallState) -> Change | None:
    return next_state(state, _GRACE_OVER)


_GRACE_OVER = Signal(event=GRACE_OVER, room="")


def _hung_up(state: CallState) -> Change | None:
    """Canceled by its hang-up (marked: through the API, or for the do-not-call list)."""
    return None if state.status in FINAL_STATUSES else Change(Status.CANCELED, state.hangup_reason)


NEVER_DIALLED = (
    "it was never dialled (its server stopped, or lost the database, first); nobody was called"
)
_NOBODY_CALLED = _failed(NEVER_DIALLED)
LISTED_WHILE_PLACING = (
    "not dialled: its number was put on the do-not-call list while the call was being placed"
)
ROOM_GONE_BEFORE_DIAL = (
    "not dialled: its room ended (its agent stopped waiting for the callee) before its dial;"
    " nobody was called"
)
PAUSED_WHILE_PLACING = (
    "not dialled: its campaign was paused while the call was being placed; nobody was called"
)
WINDOW_CLOSED_WHILE_PLACING = (
    "not dialled: its recipient's calling window closed while the call was being placed;"
    " nobody was called"
)


def _hung_up_first(applied: Applied) -> CallRecord | None:
    """The call, if a hang-up through the API came before its placement failed (LiveKit
    refused it, its number was listed meanwhile): the hang-up wins, as it does before a dial.
    Its hanger-up was answered 200 with its id, and its receiver is told of it (the
    hang-up releases its deliveries, release_deliveries): its placer is answered 200 and
    "canceled" too, not an error without its id for a call its receiver hears of. The
    settle that failed it read the mark in its own transaction: a hang-up after it finds
    the call over (409), and the call stays unreported."""
    after = applied.after
    if after is not None and after.hangup_requested and after.status is Status.CANCELED:
        return after
    return None


def _never_dialled(state: CallState) -> Change | None:
    """A call found undialled past PLACEMENT_BOUND_S: failed, nobody was called; unless the
    dial was marked meanwhile (its server was stalled, not gone, and went on dialling: as
    failed, its key freed, a retry rang the person again)."""
    return None if state.dialled else _NOBODY_CALLED(state)


NO_FINAL_EVENT = "no final event"
SANDBOX_RESTARTED = "the embedded sandbox was restarted: the call's room is gone"
SANDBOX_STOPPED = "the server stopped, its embedded sandbox with it: the call's room is gone"
_ROOM_GONE = Signal(event="room_finished", room="")


def _over_unheard(reason: str, unanswered: Decide) -> Decide:
    """A call known to be over without its room_finished (its room died with an embedded
    sandbox; past any possible end with no final event). Answered, it ends as its
    room_finished would have ended it (completed, voicemail, canceled), for `reason`:
    somebody talked to the agent, and as `failed` a campaign retrying failures called them
    again. Unanswered, as `unanswered` decides."""

    def decide(state: CallState) -> Change | None:
        if state.answered and (change := next_state(state, _ROOM_GONE)) is not None:
            return replace(change, reason=change.reason or reason)
        return unanswered(state)

    return decide


_NO_FINAL_EVENT = _over_unheard(NO_FINAL_EVENT, _fixed(Change(Status.FAILED, NO_FINAL_EVENT)))
AGENT_GONE = "its agent left the call (its process ended without ending the call)"
AGENT_GONE_KIND = "agent_gone"
# After the agent's participant left a live room: its own hang-up (the room deleted, just
# after it left) lands within this; past it, the server ends the call (sandbox time scaled).
AGENT_GONE_GRACE_S = 5.0


_ended_agent_gone = _over_unheard(AGENT_GONE, _failed(AGENT_GONE))
NO_AGENT_KIND = "no_agent"
# LiveKit (or the database) could not say whether a call's agent joined: asked again this much
# later (sandbox time scaled), for this long at most. Asked once, a call no agent came to was
# left live for good, its callee in silence until they hung up or max_duration_s.
AGENT_CHECK_RETRY_S = 5.0
AGENT_CHECK_FOR_S = 60.0


def no_agent_reason(
    timeout_s: float, agent_name: str, callee_answered: bool = False, time_scale: float = 1.0
) -> str:
    """Why; and, when the callee's line was answered, that a person heard silence (the call
    shows no answer time: nobody reported it). On a scaled sandbox, the time it really waited
    too: README's SANDBOX_TIME_SCALE=0.1 ended the call 2 s after its dial, its ring_s 2,
    and its reason said 20 s."""
    scaled = f", {timeout_s * time_scale:g} s at SANDBOX_TIME_SCALE={time_scale:g}"
    return (
        f"no agent joined the call within {timeout_s:g} s of its dial"
        + (scaled if time_scale != 1 else "")
        + f" (is an agent worker running, registered as AGENT_NAME={agent_name!r}, with room"
        " for another job?)"
    ) + ("; the callee had answered and heard nobody" if callee_answered else "")


def _no_agent(reason: str) -> Decide:
    """No agent came to a live call's room: failed (whoever answered heard nobody; as
    `failed` a campaign retrying failures calls them again), ended by the system."""

    def decide(state: CallState) -> Change | None:
        over = state.status in FINAL_STATUSES or state.room_finished or state.callee_left
        if over or state.hangup_requested:  # ending already (a hang-up deletes the room)
            return None
        return Change(Status.FAILED, reason, ended_by="system", no_report=True)

    return decide


def _agent_gone(state: CallState) -> Change | None:
    """The agent left a room that is still there: ended as its room_finished would end an
    answered call, for AGENT_GONE; failed if nobody answered (the phone may still ring). The
    server hangs it up itself: ended by `system`. Not if the callee left first (read in the
    decision's transaction, so a callee leaving as the grace ran out is never overwritten):
    the room ends by itself, and room_finished settles the call as the callee's."""
    gone = state.room_finished or state.callee_left
    change = None if gone else _ended_agent_gone(state)
    return None if change is None else replace(change, ended_by="system")


def _line_ended_unanswered(callee_left: bool, applied: Applied) -> bool:
    """The callee's leaving (`callee_left`) ended a call nobody answered, in a room that is
    still there."""
    before, after = applied.before, applied.after
    return (
        callee_left
        and before is not None
        and not before.is_final
        and after is not None
        and after.is_final
        and not after.answered
        and not after.hangup_requested  # the hang-up deleted the room
        and after.room_finished_at is None
    )


def _before_its_end(event: RoomEvent, call: CallRecord) -> bool:
    """`event` happened before `call` ended (all of LiveKit's whole second of it): retried
    or reordered, it came late, and says nothing of a room alive after the call's end."""
    end, at = call.ended_at, event.created_at
    return end is not None and at is not None and 0 < at and at + 1.0 <= end


def _agent_did(event: RoomEvent, what: str, agent_name: str) -> EventParticipant | None:
    """The agent's participant, if `event` is its `what` (participant_joined, ...): an agent
    of `agent_name` (livekit-agents' `lk.agent.name`), not one of another name the project
    dispatches to every room, nor one that gives none: livekit-agents names every job's
    participant, so a nameless agent is another program's (counted as the call's, it kept a
    call whose own agent never came, or died, live, its callee in silence)."""
    who = event.participant
    if (
        event.event == what
        and who is not None
        and who.kind == models.ParticipantInfo.Kind.AGENT
        and who.attributes.get(ATTR_AGENT_NAME) == agent_name
    ):
        return who
    return None


def _agent_joined(event: RoomEvent, agent_name: str) -> bool:
    return _agent_did(event, "participant_joined", agent_name) is not None


def _agent_left(event: RoomEvent, agent_name: str) -> bool:
    """The agent's participant left, not because its room was deleted (the call's end)."""
    who = _agent_did(event, "participant_left", agent_name)
    return who is not None and who.disconnect_reason != models.DisconnectReason.ROOM_DELETED


# Unanswered: failed, or canceled if a hang-up was asked.
_sandbox_room_gone = _over_unheard(SANDBOX_RESTARTED, _failed(SANDBOX_RESTARTED))
_sandbox_stopped = _over_unheard(SANDBOX_STOPPED, _failed(SANDBOX_STOPPED))


async def _in_batches(
    step: Callable[[int], Awaitable[int]],
    batch: int,
    budget_s: float,
    said: tuple[int, str],
    *,
    until_none: bool = False,
) -> int:
    """`step(batch)` (one transaction, at most `batch` rows) again while it fills its batch
    (`until_none`: while it does any row; a step that finishes one thing and may go on to
    the next), for `budget_s` at most: the rows it did in all, said (`said`: a log level
    and a message taking the count) with whether more may be left for the next pass."""
    deadline = time.monotonic() + budget_s
    done = 0
    more = True
    while time.monotonic() < deadline:
        last = await step(batch)
        done += last
        if last == 0 or (last < batch and not until_none):
            more = False
            break
    if done:
        level, message = said
        logger.log(level, message + "%s", done, "; more in the next pass" if more else "")
    return done


async def resolve_webhook_host(
    url: str,
    *,
    allow_private: bool,
    resolver: AbstractResolver,
    timeout: float = WEBHOOK_DNS_TIMEOUT_S,
) -> None:
    """Resolve `url`'s host with `resolver` (closed afterwards) within `timeout`: every
    address it gives must be public unless `allow_private`. Raises UnsafeWebhookUrl for a
    refused address, TimeoutError when no answer came, OSError when it names no address."""
    target = URL(url)
    try:
        async with asyncio.timeout(timeout):
            await resolve_public(
                # the name as sent (IDNA 2008: faß.de is xn--fa-hia.de); the decoded one, the
                # OS encodes as IDNA 2003 does (fass.de): another domain than the receiver's
                target.raw_host or "",
                target.port or 443,
                allow_private=allow_private,
                resolver=resolver,
            )
    finally:
        await resolver.close()


class WebhookHostUnresolved(InvalidCall):
    """The webhook URL's host gave no usable address just now (none, no answer in time, or a
    non-public one): for one call a 422 like any invalid field; for a campaign's attempt, a
    reason to try again later (a name server's hiccup, or a record being moved, must not end
    its recipients for good)."""


async def check_webhook_address(url: str, settings: Settings) -> None:
    """The call's webhook_url must resolve to public addresses only (checked again at each
    connection: DNS may change); InvalidCall if not (WebhookHostUnresolved when its host's
    answer just now was the reason: no address, or a non-public one)."""
    target = URL(url)
    try:
        await resolve_webhook_host(
            url,
            allow_private=settings.calls_webhook_allow_private,
            resolver=PooledResolver(CHECK_DNS),
        )
    except AddressRefused:  # which address is not said: an API client could map names to
        # the private addresses they have inside our network, a hundred to a campaign
        # (Said as any refusal to one call; a campaign's attempt waits and asks again: a name
        # answering 10.x for a minute, a record being moved, made every recipient placed in
        # that minute `invalid` for good, nobody called, where one not answering waits.)
        not_public = f"{target.host} resolves to a non-public address"
        raise WebhookHostUnresolved([FieldError("webhook_url", not_public)]) from None
    except UnsafeWebhookUrl as exc:
        raise InvalidCall([FieldError("webhook_url", str(exc))]) from None
    except TimeoutError:  # a name server that does not answer, or lookups queued behind one
        late = f"{target.host} was not resolved within {WEBHOOK_DNS_TIMEOUT_S:g} s; retry later"
        raise WebhookHostUnresolved([FieldError("webhook_url", late)]) from None
    except LookupsBusy:  # slow lately, and the threads slow names may hold are all held
        late = (
            f"{target.host} was slow to resolve lately and is not looked up again while"
            " other slow names' lookups run; retry later"
        )
        raise WebhookHostUnresolved([FieldError("webhook_url", late)]) from None
    except OSError as exc:
        # getaddrinfo could open no file nor socket (it then says "Name or service not
        # known" at times): this server's to fix, not the client's URL.
        if out_of_descriptors(exc) or descriptors_exhausted():
            raise OutOfDescriptors from exc
        raise WebhookHostUnresolved(
            [FieldError("webhook_url", f"{target.host} does not resolve to an address")]
        ) from None


OWNER_PROBE_S = 0.5


async def other_sandbox_alive(owner: str, own_port: int) -> bool:
    """Whether `owner` (a Settings.sandbox_owner: host name, port, listen address) is another
    server of this machine, listening now: its embedded sandbox holds the calls it placed.
    False for this server (the same port, whatever HOST spelling it had) and for a server
    not listening any more or of another machine (its rooms are out of reach from here, and
    gone with it if it went: refused, the hang-up of a call left by a server that stopped
    or was redeployed under another host name could never be made)."""
    parts = owner_parts(owner)
    if parts is None or parts[1] == own_port:
        return False
    return await sandbox_listening(owner) is True


async def sandbox_listening(owner: str) -> bool | None:
    """Whether the server `owner` names (a Settings.sandbox_owner) listens now; None if it
    is of another machine (out of reach from here: its rooms may well be alive)."""
    parts = owner_parts(owner)
    if parts is None or parts[0] != socket.gethostname():
        return None
    _name, port, listen = parts
    try:
        async with asyncio.timeout(OWNER_PROBE_S):
            _reader, writer = await asyncio.open_connection(reachable(listen), port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def config_snapshot(call: OutboundCall, settings: Settings) -> dict[str, Any]:
    """The configuration a call is placed with, as GET /calls/{id} shows it for good."""
    return {
        "caller_name": call.name,
        "agent_instructions": call.dynamic_instruction or DEFAULT_INSTRUCTIONS,
        "tts_language": call.language,
        "tts_emotion": call.emotion,
        "additional_params": dict(call.additional_params),
        "ringing_timeout_s": call.ringing_timeout_s or settings.call_ringing_timeout_s,
        "max_duration_s": call.max_duration_s or settings.call_max_duration_s,
        **call.options().to_record(),
    }


@dataclass
class WallSteps:
    """The wall clock's forward steps (NTP, a VM resumed) while this server runs: its lead
    over the monotonic clock, which no step moves, gained since it started."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    _lead: float = field(init=False)
    _gained: float = 0.0
    # Each step forward seen: (when, by the clock after it; what the lead had gained before
    # it). A call placed between two steps is younger by the later ones alone: counting every
    # step since the server started kept a call stuck live that much longer (days, for a VM
    # suspended each night).
    _steps: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lead = self.wall() - self.monotonic()

    def seen(self) -> tuple[tuple[float, float], ...]:
        """The steps forward that still count, oldest first: (when each was seen, by the clock
        after it; the seconds it and the later ones gained, less any step back): a call
        placed before it is that much younger than the clock says. Empty while the clock
        never stepped forward."""
        now = self.wall()
        gained = max(0.0, now - self.monotonic() - self._lead)
        if gained > self._gained + STEP_TOLERANCE_S:
            # A step back since an earlier step took back what that one gained
            self._steps = [(at, min(before, self._gained)) for at, before in self._steps]
            self._steps.append((now, self._gained))
            if len(self._steps) > MAX_STEPS:  # the two oldest as one: their calls judged late
                (_, first), (second_at, _) = self._steps[:2]
                self._steps[:2] = [(second_at, first)]
        self._gained = gained
        return tuple(
            (at, gained - before)
            for at, before in self._steps
            if gained - before > STEP_TOLERANCE_S
        )


@dataclass
class CallService:
    settings: Settings
    config: ConfigStore
    store: CallStore
    lkapi: api.LiveKitAPI
    metrics: Metrics
    events: EventDispatcher
    clock: Callable[[], float] = time.time
    wake_deliveries: Callable[[str], None] | None = None
    """Tell the customer webhook sender (if any) that a call's deliveries were made outside
    an event's transaction (held until its dial started; see release_deliveries)."""
    admission: Admission = field(init=False)
    instance: str = field(init=False)
    """This server's embedded sandbox among others on one database (Settings.sandbox_owner:
    host name, port and listen address), read once."""
    run: str = field(init=False)
    """This run of the server (drawn as it starts): its calls name it with `instance`, so a
    restart settles the placements the earlier run left undialled at once (`reap`)."""
    started_at: float = field(init=False)
    """When this service was made, before it placed any call: calls its embedded sandbox
    holds were all created after it (see `settle_lost_sandbox_calls`)."""
    _background: set[asyncio.Task[None]] = field(default_factory=set)
    # The rooms whose deletion is under way (_close_room_soon), and whether it is asked again
    # over LiveKit's limit; and the server stopping (aclose): a deletion waiting asks now.
    _closing_rooms: dict[str, bool] = field(default_factory=dict)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _repeats: Repeats = field(default_factory=Repeats)  # an outage fails every reaper pass
    _lost_sandbox_settled: bool = False  # by a reaper pass of this run
    # LiveKit failing placements (unreachable, unavailable, late): said once a call is
    # placed again (_placing_again).
    _placing_outage: Outage = field(default_factory=Outage)
    webhook_heard_at: float | None = None
    """When a LiveKit webhook (signed with our key) last reached this server; None: never
    since it started. Said when the reaper finishes calls whose room_finished never came."""
    # Calls dialled by this server whose agent is awaited (AGENT_JOIN_TIMEOUT_S): True once
    # it showed itself here (a report, its participant_joined).
    _agent_awaited: dict[str, bool] = field(default_factory=dict)
    # Their waits, stopped as each call settles (a wait held a task up to AGENT_JOIN_TIMEOUT_S
    # after its call ended, to find it over: many short calls piled them up).
    _agent_waits: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # Calls whose agent this run has waited for, or asked LiveKit about for a wait lost with
    # the server that held it (check_lost_agent_waits): asked once.
    _agent_asked: set[str] = field(default_factory=set)
    # Calls whose agent left their room: those this run waits on (AGENT_GONE_GRACE_S), and
    # those it waited on or asked about for a wait lost with its server (check_agent_gone).
    _agent_gone_waits: set[str] = field(default_factory=set)
    _agent_gone_asked: set[str] = field(default_factory=set)
    # A live call is stale by the time it has run: a step of the wall clock is no time run
    # (a step forward of an hour made every live call stale, and the reaper settled them).
    wall_steps: WallSteps = field(default_factory=WallSteps)
    _step_said_at: float = 0.0
    # The clock no step moves: how long this run has run is told by it. By the wall clock, a
    # server started before a step back of an hour held every gone room live for that hour.
    monotonic: Callable[[], float] = time.monotonic
    # When (by `monotonic`) this run began, or the reaper found the server had not run for a
    # while (its wait woke LATE_FINISH_S late: SIGSTOPped, a VM paused): the rooms that went
    # before wait for the reports it could not take then (settle_gone_rooms).
    _running_since: float = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.store, self.settings, self.clock)
        self.instance = self.settings.sandbox_owner
        self.run = secrets.token_hex(8)
        self.started_at = self.clock()
        self._running_since = self.monotonic()

    # ------------------------------------------------------------------ placing

    async def place(
        self,
        call: OutboundCall,
        placement: Placement,
        campaign: AttemptRef | None = None,
        window_open: Callable[[], bool] | None = None,
    ) -> Placed:
        """Admit, write the config durably, record the call, dispatch the agent, dial.

        `window_open`: a campaign call's calling window, asked again as its dial is marked.
        Raises the admission's refusals, KeyReused, ConfigWriteError, DatabaseError or
        AttemptWithdrawn (its campaign paused or canceled meanwhile; WindowClosed, its
        recipient's calling window closed meanwhile): nothing placed; or
        LiveKitError (the call is recorded as failed and its config record removed; a call
        never dialled stops counting against the rate and frees its key). Once LiveKit has
        accepted the dial, the call is never reported as failed. A hang-up that comes while
        the call is being placed wins: the number is not dialled, or the room is deleted.
        """
        with asking_for_a_new_call():
            bound = await self.admission.check(placement, call.phone_number)
        if bound is not None:
            return Placed(bound=bound)
        if call.webhook_url is not None:
            await check_webhook_address(call.webhook_url, self.settings)
        call_id = new_call_id()
        try:
            # The config record, then the row (admission checked again in its transaction).
            recorded = await self._write_and_record(call_id, call, placement, campaign)
            if isinstance(recorded, StoredAnswer):
                return Placed(bound=recorded)
            call_id, record = recorded  # (another id than the one drawn, if that was taken)
            return Placed(call=await self._dispatch_and_dial(call, call_id, record, window_open))
        except LiveKitError as exc:
            exc.call_id = call_id
            if not exc.may_have_rung:  # nobody was called: the key and the rate share go
                # (with the settle that failed it, release_refused; again here, in case that
                # settle failed and left the call to the reaper)
                await self._release(call_id)
            raise
        finally:  # placed, or refused and its write taken back: nothing more to take back
            # (until then, a dial that could not be marked takes it back: _start_dial)
            self.config.placed(call_id)

    async def _write_and_record(
        self,
        call_id: str,
        call: OutboundCall,
        placement: Placement,
        campaign: AttemptRef | None,
        *,
        draws_left: int = CALL_ID_DRAWS - 1,
    ) -> tuple[str, dict[str, Any]] | StoredAnswer:
        """The call's config written, then its row: the call id it was recorded under (another
        one drawn if `call_id` is an earlier call's) and its config record; or the answer its
        Idempotency-Key is bound to."""
        started = time.perf_counter()
        try:
            record = await self.config.update_async(
                call.name,
                call.dynamic_instruction,
                call.language,
                call.emotion,
                call.additional_params or None,
                call_id=call_id,
                options=call.options(),
                placing=True,
            )
        except ConfigWriteError as exc:
            # The store's own line tells the write; this one, which call it refused (a full
            # disk or a held lock refuses every call: said once a minute, with how many).
            if (more := self._repeats.due("config write")) is not None:
                logger.error(
                    "call %s refused: its configuration could not be stored (%s)%s",
                    call_id,
                    exc.strerror,
                    more,
                    extra={"call_id": call_id},
                )
            # A write that failed after its file replaced config.json (fsync of the
            # directory) left this refused call's record in it: take it out again.
            await self._forget_config_if_present(call_id, f"its config failed: {exc.strerror}")
            raise
        self.metrics.config_write_seconds.observe(time.perf_counter() - started)
        snapshot = config_snapshot(call, self.settings)
        new = NewCall(
            call_id,
            call.phone_number,
            call.name,
            call.language,
            call.emotion,
            ringing_timeout_s=snapshot["ringing_timeout_s"],
            max_duration_s=snapshot["max_duration_s"],
            config=snapshot,
            client=placement.client,
            webhook_url=call.webhook_url or self.settings.calls_webhook_url,
            campaign=campaign,
            sandbox_instance=self.instance if self.settings.uses_sandbox else None,
            placed_by=(self.instance, self.run),
            # Its client learns its id from the answer: a refusal before the dial answers an
            # error, and the receiver must not hear of it. A campaign shows each of its calls
            # (their recipients' attempts), refused ones too: theirs go out as they come.
            hold_deliveries=campaign is None,
        )
        try:
            applied = await self.store.create_call(
                new,
                {"phone": mask_phone(call.phone_number)},
                claim=placement.claim,
                limits=self.admission.limits,
            )
        except CallIdTaken:
            # Ids are random, 48 bits, and the calls database keeps every call's row: an
            # earlier call's id is drawn again at times (at 100,000 calls a day, two or three
            # times in the first year, more each year as the history grows). Its row's primary
            # key refused it, and the call was answered 503 "calls database unavailable",
            # nobody called. It takes another id.
            await self._retract_config(call_id, "its id is an earlier call's; another is drawn")
            self.config.placed(call_id)  # nothing of that write is left to take back
            if draws_left <= 0:  # no chance (2**-48 a draw): the random source is broken
                logger.error(
                    "call refused: %d call ids drawn in a row were taken already, %s the last",
                    CALL_ID_DRAWS,
                    call_id,
                )
                raise DatabaseError(
                    f"{CALL_ID_DRAWS} call ids drawn in a row were taken already"
                ) from None
            redrawn = new_call_id()
            try:
                return await self._write_and_record(
                    redrawn, call, placement, campaign, draws_left=draws_left - 1
                )
            except BaseException:  # as place() does for the id it drew, in its `finally`
                self.config.placed(redrawn)
                raise
        except KeyTaken as taken:  # another request (or server) bound the key meanwhile
            await self._retract_config(call_id, "its Idempotency-Key was taken meanwhile")
            assert placement.claim is not None  # noqa: S101 - only a claim can be taken
            return self.admission.verify(taken.stored, placement.claim)
        except Refused as refused:  # concurrent requests used the limit up meanwhile
            error = refusal_error(refused.refusal, self.admission.limits)
            await self._retract_config(call_id, str(error))
            raise error from None
        except AttemptWithdrawn:  # its campaign was paused or canceled meanwhile
            await self._retract_config(call_id, "its campaign was paused or canceled meanwhile")
            raise
        except CommitUnknown:
            if not await self._recorded_after_all(call_id):
                await self._retract_config(call_id, "its row's commit failed")
                raise
            # Written after all: place it. Its call.dialing event waits in the outbox; the
            # reaper dispatches it once this server's lease on it runs out.
            logger.warning(
                "call %s: its row was written though the commit's answer was lost; placing it",
                call_id,
                extra={"call_id": call_id},
            )
            return call_id, record
        except DatabaseError as exc:
            await self._retract_config(call_id, f"the calls database failed: {exc}")
            raise
        except asyncio.CancelledError:
            # Its client gone (aiohttp's handler cancellation), the server's stop: the call
            # is never dialled (a row that lands after all is settled failed by the reaper,
            # nobody called), and its config write stayed: its record until the reaper's
            # pass, and the flat document named it until the next call. Taken back as a
            # refused call's is, without waiting (this task is being cancelled).
            self.config.retract_call_soon(call_id)
            logger.warning(
                "call %s: its placement was cancelled while its row was being written; it is"
                " never dialled, and its config write is taken back",
                call_id,
                extra={"call_id": call_id},
            )
            raise
        self.events.publish(applied.events)
        return call_id, record

    async def _recorded_after_all(self, call_id: str) -> bool:
        """After a commit whose answer was lost: is the call's row there? Asked until the
        database answers, for COMMIT_CHECK_S at most; False if it never does (the call is
        refused; a row written after all is settled failed by the reaper, never dialled)."""
        return await self._read_after_lost_commit(call_id) is not None

    async def _read_after_lost_commit(self, call_id: str) -> CallRecord | None:
        """The call's row after a commit whose answer was lost, asked until the database
        answers, for COMMIT_CHECK_S at most; None if it is not there or never answers."""
        deadline = time.monotonic() + COMMIT_CHECK_S
        while True:
            try:
                return await self.store.get_call(call_id, with_timeline=False)
            except DatabaseError:
                if time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(COMMIT_CHECK_POLL_S)

    async def _dispatch_and_dial(
        self,
        call: OutboundCall,
        call_id: str,
        record: dict[str, Any],
        window_open: Callable[[], bool] | None,
    ) -> CallRecord:
        snapshot = config_snapshot(call, self.settings)
        try:
            dispatch_id = await dispatch_agent(
                self.lkapi,
                self.settings,
                call_id=call_id,
                phone_number=call.phone_number,
                record=record,
                ringing_timeout_s=snapshot["ringing_timeout_s"],
            )
        except LiveKitError as exc:
            exc.maybe_done = False  # a dispatch never dials
            # (no agent was dispatched: none will report on the call)
            if (
                hung_up := await self._placement_failed(
                    call_id, exc, no_agent=True, room_made=exc.sent
                )
            ) is not None:
                return hung_up
            raise
        try:
            current = await self._start_dial(call_id, window_open)
        except WindowClosed:
            return await self._window_closed_while_placing(call_id)
        except AttemptWithdrawn:
            return await self._paused_while_placing(call_id)
        if current is not None and (current.hangup_requested or current.is_final):
            return await self._hung_up_while_placing(call_id, current)
        if current is not None and current.dial_started_at is None:
            if current.room_finished_at is not None:  # its agent's room ended meanwhile
                return await self._room_gone_before_dial(call_id)
            return await self._listed_while_placing(call_id)  # listed meanwhile
        try:
            placed = await dial(
                self.lkapi,
                self.settings,
                call_id=call_id,
                phone_number=call.phone_number,
                ringing_timeout_s=snapshot["ringing_timeout_s"],
                max_duration_s=snapshot["max_duration_s"],
            )
        except LiveKitError as exc:
            if not exc.may_have_rung:
                # LiveKit refused the dial before making it: unmarked before it is settled,
                # so a campaign reads it never dialled and places it again, not a failed dial.
                await self._unmark_dial(call_id)
            if (hung_up := await self._placement_failed(call_id, exc)) is not None:
                return hung_up
            raise
        self.metrics.calls_placed.labels(result="placed").inc()
        self._placing_again(call_id)
        self._await_agent(call_id)
        detail = {"dispatch_id": dispatch_id, "participant_id": placed.participant_id}
        try:
            applied = await self._settle(
                call_id, "dialed", lambda _state: None, detail=detail, dial_taken=True
            )
        except DatabaseError as exc:  # an outage fails every call's: once a minute
            if (more := self._repeats.due("dial details")) is not None:
                logger.error(
                    "call %s is dialing but its dial details were not recorded: %s%s",
                    call_id,
                    exc,
                    more,
                    extra={"call_id": call_id},
                )
            return self._dialing_record(call_id, call)
        if applied.before is not None and applied.before.hangup_requested:
            # The hang-up came while we dialled, and its room deletion may have come before the
            # dial created the room again: delete it now, so the phone stops ringing.
            logger.info("call %s was hung up while being placed; ending it", call_id)
            self._close_room_soon(call_id)
        if applied.after is None:  # the row was inserted above; only a lost database gets here
            logger.error("call %s is dialing but vanished from the calls database", call_id)
            return self._dialing_record(call_id, call)
        return applied.after

    async def _start_dial(
        self, call_id: str, window_open: Callable[[], bool] | None
    ) -> CallRecord | None:
        """Mark the dial as started and read the call: a hang-up may have come meanwhile.

        When the database cannot record it, the number is not dialled: DatabaseError (503,
        retry). A dial the database does not know of looked, a minute later, like a call the
        server stopped before dialling: the reaper settled it "nobody was called" and freed
        its Idempotency-Key, and the client's retry called the person again (and a lost
        room_finished left the call live for the reaper's whole bound, since only dialled
        calls are asked about). Not dialled, that is what the reaper finds, and it is true.
        """
        try:
            return await self.store.start_dial(call_id, window_open)
        except CommitUnknown as exc:
            # Written or not: as not written, the call would end no_answer with nobody rung
            # and its key bound for good (the reaper frees only calls never marked).
            written = await self._read_after_lost_commit(call_id)
            if written is not None and written.dial_started_at is not None:
                return written
            failure: DatabaseError = exc
        except DatabaseError as exc:
            failure = exc
        # A database outage (or its pool used up) refuses every call here, each answered 503:
        # said once a minute (88 ERROR lines in a minute on PostgreSQL, `ulimit -n 256`).
        if (more := self._repeats.due("dial mark")) is not None:
            logger.error(
                "call %s: could not mark its dial as started, so it is not dialled: %s%s",
                call_id,
                failure,
                more,
                extra={"call_id": call_id},
            )
        self._close_room_soon(call_id)  # the agent's dispatch made it
        # Taken back whole, as a refused call's write: removed, its record went, but the
        # seed's flat document went on naming this call, never placed.
        await self._retract_config(call_id, f"its dial could not be marked as started: {failure}")
        raise failure

    async def _hung_up_while_placing(self, call_id: str, current: CallRecord) -> CallRecord:
        """The API hung up before we dialled: do not dial; end the room the dispatch made."""
        logger.info("call %s was hung up before it was dialled; not dialling", call_id)
        self._close_room_soon(call_id)
        # Taken back whole, as a refused call's write: removed, its record went, but the
        # seed's flat document went on naming this call, never dialled.
        await self._retract_config(call_id, "hung up through the API before its dial")
        if current.is_final:
            return current
        applied = await self._settle(call_id, "hangup", _hung_up)
        return applied.after or current

    async def _room_gone_before_dial(self, call_id: str) -> CallRecord:
        """The room its agent's dispatch made ended before the dial (the agent stopped waiting
        for a callee, its server stalled past that between the two): not dialled, as a dial
        LiveKit refused (a campaign places its attempt again, with a new dispatch). Dialled,
        LiveKit made a new room for it with no agent, and the callee answered to silence."""
        exc = LiveKitUnavailable(ROOM_GONE_BEFORE_DIAL, maybe_done=False, kind="room gone")
        if (hung_up := await self._placement_failed(call_id, exc)) is not None:
            return hung_up
        raise exc

    async def _listed_while_placing(self, call_id: str) -> CallRecord:
        """The number was put on the do-not-call list after the call was recorded, before its
        dial: not dialled (a campaign places the attempt again and finds the number
        listed)."""
        if (
            hung_up := await self._withdrawn_while_placing(
                call_id,
                "its number was put on the do-not-call list",
                LISTED_BEFORE_DIAL,
                LISTED_WHILE_PLACING,
            )
        ) is not None:
            return hung_up
        raise OnDoNotCallList

    async def _paused_while_placing(self, call_id: str) -> CallRecord:
        """Its campaign was paused after the call was recorded, before its dial: not dialled
        (a pause stops every call not dialled yet; its attempt ends not_dialled, and its
        recipient is due again on resume)."""
        if (
            hung_up := await self._withdrawn_while_placing(
                call_id, "its campaign was paused", PAUSED_BEFORE_DIAL, PAUSED_WHILE_PLACING
            )
        ) is not None:
            return hung_up
        raise AttemptWithdrawn(f"call {call_id}: its campaign was paused before its dial")

    async def _window_closed_while_placing(self, call_id: str) -> CallRecord:
        """Its recipient's calling window closed after its attempt was begun, before its
        dial (the placing took that long): not dialled (its attempt ends not_dialled, and its
        recipient waits for the window's next opening)."""
        if (
            hung_up := await self._withdrawn_while_placing(
                call_id,
                "its recipient's calling window closed",
                WINDOW_CLOSED_BEFORE_DIAL,
                WINDOW_CLOSED_WHILE_PLACING,
            )
        ) is not None:
            return hung_up
        raise WindowClosed(f"call {call_id}: its calling window closed before its dial")

    async def _withdrawn_while_placing(
        self, call_id: str, what: str, kind: str, reason: str
    ) -> CallRecord | None:
        """A call recorded, then withdrawn before its dial (`what` happened meanwhile): not
        dialled. Settled failed, unmarked, its key and rate share freed: nobody was called.
        Unless a hang-up through the API came first: it wins, and the call is returned for
        its placer's answer (see _hung_up_first)."""
        logger.info(
            "call %s: %s while it was being placed; not dialling",
            call_id,
            what,
            extra={"call_id": call_id},
        )
        self._close_room_soon(call_id)  # the agent's dispatch made it
        await self._retract_config(call_id, what)  # never dialled: the flat document too
        try:
            # Its key and rate share freed in the same transaction (release_refused): freed
            # after it, a stop or a lost connection between the two left its key bound to a
            # call settled failed, and a retry under it was answered 200 with its id, for a
            # call its receiver never hears of.
            # No report to wait for (no_report): nobody was called, there is no conversation,
            # and the room its agent was dispatched to is deleted above. GET /calls read
            # `report_status: "pending"` for REPORT_WAIT_S (10 minutes) all the same.
            applied = await self._settle(
                call_id, kind, _failed(reason, no_report=True), release_refused=True
            )
        except DatabaseError as exc:  # never dialled: the reaper settles it, freeing its key
            if (more := self._repeats.due("record not dialled")) is not None:
                logger.error(
                    "call %s: could not record that it was not dialled: %s%s",
                    call_id,
                    exc,
                    more,
                    extra={"call_id": call_id},
                )
        else:
            return _hung_up_first(applied)
        return None

    async def _placement_failed(
        self, call_id: str, exc: LiveKitError, *, no_agent: bool = False, room_made: bool = True
    ) -> CallRecord | None:
        """Settled failed, or canceled if a hang-up through the API came first: then the
        call, which its placer is answered (200, as its hanger-up was) rather than the error
        (see _hung_up_first). `no_agent`: its agent was never dispatched (no report comes).
        `room_made`: its room may exist (False: its dispatch never reached LiveKit)."""
        if isinstance(exc, LiveKitOverLimit) and (heard := OVER_LIMIT_HEARD.get()) is not None:
            heard(exc)  # before the settle frees a campaign's slot
        lost_answer = exc.maybe_done and exc.sip_status is None
        if lost_answer and (taken := await self._dial_taken_after_all(call_id, exc)) is not None:
            return taken
        hung_up = None
        # A dial LiveKit answered with a SIP status reached the callee's line: 486 is busy,
        # 480 no answer, as the same status in a webhook says (README's statuses).
        sip = None if exc.sip_status is None else status_for_sip_code(exc.sip_status)
        # A LiveKit down fails every call: once a minute per kind of failure, with how many
        # (each call's reason is in its row, its API answer and the metrics). A busy or
        # unanswered line is an outcome, not a fault: its status line (INFO) says it.
        line_answered = sip in (Status.BUSY, Status.NO_ANSWER)
        more = None if line_answered else self._repeats.due(f"placement {exc.kind}")
        where = ""
        if isinstance(exc, LiveKitUnavailable | LiveKitTimeout):  # LiveKit's, not the line's
            self._placing_outage.failed(f"placement {exc.kind}")
            # Which LiveKit (the start-up line that named it may be days old): not in the
            # reason, which the call's row and its API answer keep.
            if self.settings.livekit_url is not None:
                where = f" (LiveKit at {self.settings.livekit_url}, LIVEKIT_URL)"
        # A number that does not exist (404, 484 incomplete, 604) is the client's data, which
        # no operator can fix: a WARNING, not an ERROR (for what needs a human).
        no_such_number = exc.sip_status in _NO_SUCH_NUMBER_CODES
        if more is not None:
            logger.log(
                logging.WARNING if no_such_number else logging.ERROR,
                "call %s could not be placed: %s%s%s%s",
                call_id,
                exc.reason,
                " (the number called does not exist: the client's data)" if no_such_number else "",
                where,
                more,
                extra={"call_id": call_id},
            )
        try:
            applied = await self._settle(
                call_id,
                "placement_failed",
                _failed(
                    exc.reason,
                    no_report=no_agent,
                    status=sip or Status.FAILED,
                    unless_shown_taken=lost_answer,
                ),
                detail={"reason": exc.reason, "sip_status": exc.sip_status},
                release_refused=True,  # never dialled: freed with it (_listed_while_placing)
            )
        except DatabaseError as db_exc:  # the reaper settles the row once the db is back
            self.metrics.calls_placed.labels(result="failed").inc()
            if (more := self._repeats.due("record placement failure")) is not None:
                logger.error(
                    "call %s: could not record the failure: %s%s",
                    call_id,
                    db_exc,
                    more,
                    extra={"call_id": call_id},
                )
        else:
            hung_up = _hung_up_first(applied)
            after = applied.after
            if (
                lost_answer
                and applied.change is None
                and after is not None
                and _dial_shown_taken(after.state)
            ):
                # Shown taken between the look above and this decision: as there (counted
                # placed there, not failed here too).
                return self._dial_taken(call_id, after, exc)
            self.metrics.calls_placed.labels(result="failed").inc()
        if exc.may_have_rung:
            await self._forget_config(call_id)
        else:  # nobody was called: taken back whole, the flat document named it
            await self._retract_config(call_id, f"LiveKit did not place it: {exc.reason}")
        # Asked again while LiveKit is over a limit only for a phone that may ring: a refused
        # placement's deletion (its dispatch refused alike, most often) is one more request.
        # None for a dispatch that never reached LiveKit (no connection): with LiveKit
        # unreachable, each such call logged "could not delete its room" of a room never made.
        if room_made:
            self._close_room_soon(call_id, ask_again=exc.may_have_rung)
        return hung_up

    async def _dial_taken_after_all(self, call_id: str, exc: LiveKitError) -> CallRecord | None:
        """The call, if LiveKit's events (or its agent's reports) showed its line ringing or
        answered before its dial's answer was lost (a timeout, a dropped connection): LiveKit
        took that dial. Failed, its room was deleted on a callee talking to the agent, and
        the call recorded `failed` for a conversation held and reported (found with two
        servers: the one placing it stalled 18 s past its dial). None: not shown, or the
        database cannot say (the placement fails as before)."""
        try:
            current = await self.store.get_call(call_id, with_timeline=False)
        except DatabaseError:
            return None
        # (Over already, once answered: the callee talked and hung up while the dial's answer
        # was out; failed, its placer was answered 504 and it counted failed.)
        if current is None or not _dial_shown_taken(current.state):
            return None
        return self._dial_taken(call_id, current, exc)

    def _dial_taken(self, call_id: str, current: CallRecord, exc: LiveKitError) -> CallRecord:
        logger.warning(
            "call %s: its dial's answer was lost (%s), but LiveKit's events show its line %s:"
            " the call %s",
            call_id,
            exc.reason,
            "answered" if current.state.answered else current.status.value,
            f"is over ({current.status.value})" if current.is_final else "goes on",
            extra={"call_id": call_id},
        )
        self.metrics.calls_placed.labels(result="placed").inc()
        if not current.is_final:
            self._await_agent(call_id)
        return current

    async def _unmark_dial(self, call_id: str) -> None:
        try:
            await self.store.unmark_dial(call_id)
        except DatabaseError as exc:  # the campaign counts a failed dial: no harm beyond that
            if (more := self._repeats.due("dial unmark")) is not None:
                logger.error("call %s: could not unmark its refused dial: %s%s", call_id, exc, more)

    async def _release(self, call_id: str) -> None:
        try:
            await self.store.release_placement(call_id)
        except DatabaseError as exc:  # the call keeps counting, its key stays bound: no harm
            # once a minute: an outage failed each call's release, a line each
            if (more := self._repeats.due("release")) is not None:
                logger.error(
                    "call %s: could not release its rate share and key: %s%s", call_id, exc, more
                )

    def _dialing_record(self, call_id: str, call: OutboundCall) -> CallRecord:
        """What we know of a call LiveKit is dialing when the database cannot tell us more."""
        now = self.clock()
        return CallRecord(
            call_id=call_id,
            phone_number=call.phone_number,
            caller_name=call.name,
            language=call.language,
            emotion=call.emotion,
            status=Status.DIALING,
            outcome=None,
            reason=None,
            answered=False,
            hangup_requested=False,
            created_at=now,
            answered_at=None,
            ended_at=None,
            updated_at=now,
        )

    async def remember(
        self, placement: Placement, call_id: str, status: int, body: dict[str, Any]
    ) -> None:
        """Store the answer about `call_id` given under the placement's Idempotency-Key, for
        its retries."""
        if placement.claim is None:
            return
        try:
            await self.admission.remember(placement.claim, call_id, status, body)
        except DatabaseError as exc:  # the key is bound to its call already: retries get it
            if (more := self._repeats.due("remember")) is not None:  # once a minute, as above
                logger.error("could not store the answer under an Idempotency-Key: %s%s", exc, more)

    # ------------------------------------------------------------------ events

    async def handle_event(self, event: RoomEvent) -> Applied | None:
        """Apply one verified webhook event to its call; None if it is not about our calls."""
        room = event.room_name
        if not room.startswith(CALL_ID_PREFIX):
            logger.debug("webhook %s %s is not about a call of ours", event.event, event.id)
            return None
        signal = signal_from_event(event)
        finished = event.event == "room_finished"
        callee_left = signal.sip_participant and event.event in CALLEE_GONE_EVENTS
        agent_name = self.settings.agent_name
        agent_left = _agent_left(event, agent_name)
        detail = _signal_detail(signal)
        if agent_left:  # the wait it starts is taken up from this after a restart
            detail[AGENT_LEFT_DETAIL] = True
        if _agent_joined(event, agent_name):  # a sign of the agent, for any server's decision
            detail[AGENT_JOINED_DETAIL] = True
        elif not agent_left and _agent_did(event, "participant_left", agent_name) is not None:
            # It left as its room was deleted (our agent deletes it as the callee hangs up): it
            # was in the call. Its participant_joined may be the webhook LiveKit lost, and an
            # agent that sends no reports (or cannot reach us) leaves no other sign: the call
            # it talked through was failed "no agent joined", and called again by a campaign.
            detail[AGENT_IN_CALL_DETAIL] = True
        # Whether an agent showed itself matters only where the call may end answered.
        seen = True if not (finished or callee_left) else await self._agent_came(room)
        applied = await self._settle(
            room,
            event.event,
            lambda state: next_state(replace(state, agent_seen=seen), signal),
            event_id=event.id or None,
            detail=detail,
            room_finished=finished,
            callee_left=callee_left,
            event_at=event.created_at,
        )
        if applied.unknown_call:
            # Another app's room in the same LiveKit project may hold a caller's number:
            # LiveKit names an inbound call's room `<roomPrefix>_<caller>_<random>`, and the
            # prefix in its docs is "call-" (`call-_+14155550123_aB3x`): masked, as numbers are.
            logger.debug("webhook %s for unknown room %s ignored", event.event, redact(room))
            return None
        if applied.duplicate:
            logger.debug("webhook %s (%s) already applied", event.id, event.event)
            if finished and self._grace(event) <= 0:
                # Sent again because its first delivery was answered 503: that one stored the
                # event, and its settle (the second write, made as the event is handled when
                # no grace is configured; a grace's timer answers nothing) failed. As a
                # duplicate it changed nothing, and the call stayed live (against
                # CALLS_MAX_ACTIVE) until the reaper's next pass. Settled here as the first
                # would have, if it is still to settle: several sent again at once, one line.
                decide = await self._grace_over(room)
                await self._settle(room, GRACE_OVER, decide, only_if_changed=True)
            return applied
        before = applied.before
        if (
            event.event in ROOM_ALIVE_EVENTS
            and before is not None
            and before.is_final
            and _before_its_end(event, before)
        ):
            logger.info(
                "call %s: its %s came late, after its end (%s), though it happened before"
                " it; the call stands",
                room,
                event.event,
                before.status.value,
                extra={"call_id": room},
            )
        elif event.event in ROOM_ALIVE_EVENTS and before is not None and before.is_final:
            # A LiveKit request that timed out still ran (a dial landing after the call was
            # settled failed, re-creating the room we deleted): the callee must not be rung,
            # or left talking to nobody, for a call that is over in our books. Each of the
            # room's webhooks ends it again; the call is said once (a minute), not per event.
            if _agent_joined(event, agent_name):
                # Our agent, dispatched before the dial, joining once its line had ended: no
                # request ran late. LiveKit says a busy line, an invalid number or a trunk's
                # refusal within a second of the dial, and the agent's job takes a second or
                # two to join (its participant_joined comes when it is connected): a WARNING
                # that the room was alive, as if a dial had landed late, for routine calls
                # (never seen on the sandbox, which posts no participant_joined of the agent).
                logger.info(
                    "call %s is %s; its agent joined its room after its end; ending it",
                    room,
                    before.status.value,
                    extra={"call_id": room},
                )
            elif (more := self._repeats.due(f"room alive {room}")) is not None:
                logger.warning(
                    "call %s is %s but its room is alive (%s); ending it%s",
                    room,
                    before.status.value,
                    event.event,
                    more,
                    extra={"call_id": room},
                )
            self._close_room_soon(room)
        if agent_left or _agent_joined(event, agent_name):  # an agent that left had come
            self._agent_seen(room)
        live = applied.after is not None and not applied.after.is_final
        if agent_left and live:
            self._end_if_agent_stays_gone(room)
        if _line_ended_unanswered(callee_left, applied):
            # Busy, unanswered, a trunk failure: our agent, dispatched into the room, waits
            # for an answer until the ringing timeout and 15 s more (45-135 s), a worker's job
            # held for nobody, when the line ended before it listened. Let it go now.
            self._close_room_soon(room)
        if finished:  # its record leaves config.json with the next write (nobody waits)
            self.config.forget_call_soon(room)
            if applied.after is not None and not applied.after.is_final:
                grace = self._grace(event)
                if grace > 0:
                    self._settle_after_grace(room, grace)
                else:  # no grace configured: settle now, as the event is handled
                    return await self._settle(room, GRACE_OVER, await self._grace_over(room))
        return applied

    async def _agent_came(self, call_id: str) -> bool:
        """Whether an agent of ours showed itself in the call: to this server (its report,
        its participant_joined) or in the database (a report of it, its participant joining
        or leaving, whichever server heard it). With AGENT_JOIN_TIMEOUT_S 0 (no check of the
        agent), taken as yes."""
        if self.settings.agent_join_timeout_s <= 0 or self._agent_awaited.get(call_id):
            return True
        return await self.store.agent_seen(call_id)

    async def _grace_over(self, call_id: str, *, recheck: bool = False) -> Decide:
        """The decision when a finished room's grace is over, knowing whether an agent came.
        An answered call with no sign of one is failed (NO_AGENT_BEFORE_END) only once its
        room finished the late grace ago (REPORTS_RETRY_S): the agent's reports refused in
        an outage are still being retried up to that far apart, and a call somebody talked
        to, failed, is called again by a campaign retrying failures. Until then it waits
        (`recheck`: a timer decides again when that time is up; else the next reaper pass)."""
        if await self._agent_came(call_id):
            return _grace_over
        call = await self.store.get_call(call_id, with_timeline=False)
        finished = None if call is None else call.room_finished_at
        left = 0.0 if finished is None else self._late_grace() - (self.clock() - finished)
        if left > 0:
            # Only an answered call waits on (an unanswered one settles now, as it did: asked
            # again, its end got a second grace line in its timeline, 30 s after it). One
            # answered between this read and the decision is the reaper's.
            if recheck and call is not None and call.answered:
                self._settle_after_grace(call_id, left)
            return lambda state: None if state.answered else _grace_over(state)
        return lambda state: _grace_over(replace(state, agent_seen=False))

    def _grace(self, event: RoomEvent) -> float:
        """How long an unanswered room_finished waits for late evidence of an answer: the
        settle grace, or REPORTS_RETRY_S if it came LATE_FINISH_S or more after the room
        finished (LiveKit's retry after an outage, or a room found gone): the agent's reports
        refused by the same outage are still being retried, up to 40 s apart. With the grace
        alone, an answered call whose answer landed 8 s after it settled no_answer (a server
        down 40 s under live calls: 2 of 2) was shown no_answer beside its transcript. A grace
        of 0 waits for nothing."""
        now = self.clock()
        if now - happened_at(now, event.created_at) >= LATE_FINISH_S:
            return self._late_grace()
        return self.settings.calls_settle_grace_s

    def _late_grace(self) -> float:
        """The grace of a room_finished that came late (see _grace); 0 stays 0."""
        grace = self.settings.calls_settle_grace_s
        return max(grace, REPORTS_RETRY_S) if grace > 0 else grace

    def _settle_after_grace(self, call_id: str, grace: float) -> None:
        """An unanswered room_finished settles once late evidence of an answer had its chance.

        The timer is a shortcut: the reaper settles the same calls from the database (after a
        restart, or on another instance), and settling twice changes nothing.
        """
        logger.debug("call %s: room finished unanswered; settling in %.1f s", call_id, grace)

        async def settle() -> None:
            await asyncio.sleep(grace)
            try:
                decide = await self._grace_over(call_id, recheck=True)
                await self._settle(call_id, GRACE_OVER, decide)
            except DatabaseError as exc:  # the reaper settles it (once a minute: a burst)
                if (more := self._repeats.due("grace settle")) is not None:
                    logger.error(
                        "call %s: could not settle after the grace: %s; the reaper settles it%s",
                        call_id,
                        exc,
                        more,
                    )

        self._spawn(settle(), f"grace-{call_id}")

    def _await_agent(self, call_id: str) -> None:
        """A dialled call's agent must be in its room within AGENT_JOIN_TIMEOUT_S: with no
        worker registered under AGENT_NAME, or none free, LiveKit keeps the dispatch waiting
        and the callee answers to silence. Unless the agent has shown itself to this server
        meanwhile (a report, its participant_joined), LiveKit is asked who is in the room;
        with no agent there the call is ended (failed) and its room deleted. A server that
        stops meanwhile loses the wait: the reaper asks instead (check_lost_agent_waits)."""
        timeout_s = self.settings.agent_join_timeout_s
        if timeout_s <= 0:
            return
        self._agent_awaited[call_id] = False
        self._agent_asked.add(call_id)

        async def check() -> None:
            try:
                await wait_or_check()
            finally:
                if self._agent_waits.get(call_id) is asyncio.current_task():
                    del self._agent_waits[call_id]
                    # kept through the check: a sign of the agent during its questions counts
                    self._agent_awaited.pop(call_id, None)

        async def wait_or_check() -> None:
            await asyncio.sleep(timeout_s * self.settings.time_scale)
            if self._agent_awaited.get(call_id):
                return
            loop = asyncio.get_running_loop()
            retry_s = AGENT_CHECK_RETRY_S * self.settings.time_scale
            until = loop.time() + AGENT_CHECK_FOR_S * self.settings.time_scale
            while not await self._end_if_no_agent(call_id, timeout_s):
                if loop.time() + retry_s > until:
                    if (more := self._repeats.due("agent check given up")) is not None:
                        logger.warning(
                            "call %s: could not see for %g s whether its agent joined; left"
                            " live (it ends when the callee hangs up, or at its"
                            " max_duration_s)%s",
                            call_id,
                            AGENT_CHECK_FOR_S,
                            more,
                            extra={"call_id": call_id},
                        )
                    return
                await asyncio.sleep(retry_s)

        self._agent_waits[call_id] = self._spawn(check(), f"agent-join-{call_id}")

    def _stop_awaiting_agent(self, call_id: str) -> None:
        """The call settled: its wait for an agent (if any, and not this task) ends now."""
        wait = self._agent_waits.get(call_id)
        if wait is None or wait is asyncio.current_task():
            return
        del self._agent_waits[call_id]
        self._agent_awaited.pop(call_id, None)
        wait.cancel()

    def _placing_again(self, call_id: str) -> None:
        """A call placed after LiveKit failed placements (unreachable, 5xx, late): said once,
        with how long and how many failures were held back since their last line (once a
        minute: of an outage shorter than that, only the first was said, the rest never
        counted), so the next outage is said at once. Only /readyz said it, when probed."""
        if (ended := self._placing_outage.ended(self._repeats)) is None:
            return
        logger.warning(
            "LiveKit places calls again (call %s) after %.0f s of failed placements; %d more"
            " failure(s) held back since the last line said one",
            call_id,
            ended.lasted_s,
            ended.held,
            extra={"call_id": call_id},
        )

    def _agent_seen(self, call_id: str) -> None:
        if call_id in self._agent_awaited:
            self._agent_awaited[call_id] = True

    async def _end_if_no_agent(self, call_id: str, timeout_s: float) -> bool:
        """Whether it could be told (False: LiveKit or the database could not say; ask again)."""
        try:
            call = await self.store.get_call(call_id, with_timeline=False)
            if call is None or call.is_final:
                return True
            present = await room_presence(self.lkapi, call_id, self.settings.agent_name)
            if present is None or present.agent:  # the room is gone (it settles), or an agent
                return True
            if await self._agent_came(call_id):
                # It joined and is gone again (its participant_left, a report, here or on
                # another server, maybe while LiveKit was asked): the wait after an agent
                # left decides (AGENT_GONE), not this one, which is for an agent never come.
                return True
            reason = no_agent_reason(
                timeout_s,
                self.settings.agent_name,
                present.callee_answered,
                self.settings.time_scale,
            )
            applied = await self._settle(
                call_id, NO_AGENT_KIND, _no_agent(reason), only_if_changed=True
            )
        except (DatabaseError, LiveKitError) as exc:
            if (more := self._repeats.due("agent check")) is not None:
                logger.warning(
                    "call %s: could not see whether its agent joined: %s%s",
                    call_id,
                    exc,
                    more,
                    extra={"call_id": call_id},
                )
            return False
        if applied.change is None:
            return True
        if (more := self._repeats.due("no agent")) is not None:
            logger.error("call %s ended: %s%s", call_id, reason, more, extra={"call_id": call_id})
        self._close_room_soon(call_id)
        return True

    def _end_if_agent_stays_gone(self, call_id: str) -> None:
        """The agent left a live call's room (its process killed, out of memory, its machine
        gone): nobody will speak to the callee, and LiveKit keeps the line up until the
        callee hangs up or `max_duration_s`. Unless the room finished, or the callee left,
        within AGENT_GONE_GRACE_S, the call is settled (AGENT_GONE) and its room deleted.
        A server that stops meanwhile leaves it to the reaper of the next (check_agent_gone)."""

        async def end() -> None:
            try:
                await asyncio.sleep(AGENT_GONE_GRACE_S * self.settings.time_scale)
                await self._end_if_agent_gone(call_id)
            finally:
                self._agent_gone_waits.discard(call_id)
                self._agent_gone_asked.add(call_id)

        self._agent_gone_waits.add(call_id)
        self._spawn(end(), f"agent-gone-{call_id}")

    async def _end_if_agent_gone(self, call_id: str, *, unsure_ends: bool = True) -> bool:
        """The end of the wait after a call's agent left: the call settled AGENT_GONE unless
        it ended meanwhile or another agent of ours is in its room. With LiveKit unable to
        say who is in the room, it is settled too (`unsure_ends`: the wait of this run, the
        agent left seconds ago), or left (the reaper taking up a wait from the timeline,
        where an agent may have left long ago: a second job of ours leaving at once, the
        call going on with the first). False if the database, or there LiveKit, could not
        say (asked again by the next reaper pass)."""
        try:
            call = await self.store.get_call(call_id, with_timeline=False)
            if call is None or call.is_final or call.callee_left_at is not None:
                return True
            stays = await self._another_agent_stays(call_id)
            if stays is None and not unsure_ends:
                # Once a minute: LiveKit down, it was said every reaper pass (30 s) for as
                # long as it stayed down.
                if (more := self._repeats.due("agent gone unsure")) is not None:
                    logger.warning(
                        "call %s: its agent left the room; LiveKit cannot say whether another"
                        " is in it now: asked again by the next pass%s",
                        call_id,
                        more,
                        extra={"call_id": call_id},
                    )
                return False
            if stays:
                return True
            applied = await self._settle(
                call_id, AGENT_GONE_KIND, _agent_gone, only_if_changed=True
            )
        except DatabaseError as exc:  # an outage: every pass's (30 s), once a minute
            if (more := self._repeats.due("agent gone settle")) is not None:
                logger.error(
                    "call %s: could not settle it, its agent gone: %s%s", call_id, exc, more
                )
            return False
        if applied.change is None or applied.after is None:
            return True
        logger.warning(
            "call %s: its agent left the room and the call was still live; ending it (%s)",
            call_id,
            applied.after.status.value,
            extra={"call_id": call_id},
        )
        self._close_room_soon(call_id)
        return True

    async def check_agent_gone(self, now: float) -> int:
        """The wait after a call's agent left its room (`_end_if_agent_stays_gone`) is a timer
        in the server that got the agent's participant_left: a server stopped or killed in
        those AGENT_GONE_GRACE_S lost it, and the call stayed live, its callee in silence,
        until they hung up (then read `completed` as if the agent had talked) or
        max_duration_s. The live calls whose agent left over the grace ago (their timeline
        says so), that no wait of this run covers, are asked about here as the wait would
        have, each once. How many were asked."""
        owner = self.instance if self.settings.uses_sandbox else None
        since = now - AGENT_GONE_GRACE_S * self.settings.time_scale
        candidates = set(await self.store.agent_gone_unsettled(since, owner))
        self._agent_gone_asked &= candidates | self._agent_gone_waits  # bounded by live calls
        unasked = sorted(candidates - self._agent_gone_asked - self._agent_gone_waits)
        for call_id in unasked:
            with self._one_call(call_id, "agent gone"):  # not asked: asked again next pass
                if not await self._end_if_agent_gone(call_id, unsure_ends=False):
                    break  # the database, or LiveKit, cannot say: the rest wait for the next pass
                self._agent_gone_asked.add(call_id)
        return len(unasked)

    async def _another_agent_stays(self, call_id: str) -> bool | None:
        """Whether LiveKit has an agent in the room still: the one that left was a second
        job in it (LiveKit dispatched the call twice; the later job leaves at once, see
        agent/worker.py), and the call goes on with the first. None when LiveKit cannot say
        (the wait of this run ends the call then: a callee left in silence is worse than a
        call cut short)."""
        try:
            present = await room_presence(self.lkapi, call_id, self.settings.agent_name)
        except LiveKitError:
            return None
        if present is not None and present.agent:
            logger.info(
                "call %s: an agent left its room, another is still in it; the call goes on",
                call_id,
                extra={"call_id": call_id},
            )
            return True
        return False

    async def _settle(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, Any] | None = None,
        room_finished: bool = False,
        callee_left: bool = False,
        only_if_changed: bool = False,
        ended_at: float | None = None,
        event_at: float | None = None,
        dial_taken: bool = False,
        release_refused: bool = False,
    ) -> Applied:
        """Apply one decision in one transaction; its events go out once it committed."""
        applied = await self.store.apply(
            call_id,
            kind,
            decide,
            event_id=event_id,
            detail=detail,
            room_finished=room_finished,
            callee_left=callee_left,
            only_if_changed=only_if_changed,
            ended_at=ended_at,
            event_at=event_at,
            dial_taken=dial_taken,
            release_refused=release_refused,
        )
        self._publish(call_id, applied)
        return applied

    def _publish(self, call_id: str, applied: Applied) -> None:
        """A committed change's events, and the news of deliveries held until its dial; a
        call that settled waits for no agent any more."""
        self.events.publish(applied.events)
        change = applied.change
        if change is not None and change.reason == NO_AGENT_BEFORE_END:
            # As a call no agent came to in AGENT_JOIN_TIMEOUT_S: what needs a human.
            if (more := self._repeats.due("no agent")) is not None:
                logger.error(
                    "call %s ended: %s%s", call_id, change.reason, more, extra={"call_id": call_id}
                )
        if applied.after is not None and applied.after.is_final:
            self._stop_awaiting_agent(call_id)
        if applied.released and self.wake_deliveries is not None:
            self.wake_deliveries(call_id)

    async def _forget_config_if_present(self, call_id: str, why: str) -> None:
        # Missing (no record in it), or no file (a directory: nothing was written to
        # it, and a removal would log one more failure for a call that never had a record).
        if not await aiofiles.os.path.isfile(self.config.path):
            return
        try:
            await self.config.load_async(call_id=call_id)
        except UnknownCallError:
            return
        except OSError:  # cannot tell: try the removal, which logs its own failure
            pass
        await self._retract_config(call_id, why)

    def _close_room_soon(self, call_id: str, *, ask_again: bool = True) -> None:
        """Best effort, off the request's path: delete the room of a call that failed to place.

        The dispatch may have started an agent, and after a dial timeout LiveKit may still be
        ringing the callee: deleting the room ends both. LiveKit over a limit of its own is
        asked again (CLOSE_ROOM_RETRY_S; `ask_again`), and once more at once when the server
        stops (`aclose`); another failure is said, and changes nothing more. A deletion of the
        room under way is not begun again beside it (each webhook of a room alive for a call
        that is over asks for one: each was a deletion of its own, asked again five times
        into the limit that refused it).
        """
        if call_id in self._closing_rooms:
            self._closing_rooms[call_id] |= ask_again
            return
        self._closing_rooms[call_id] = ask_again

        async def close() -> None:
            try:
                for pause in (*CLOSE_ROOM_RETRY_S, None):
                    try:
                        await end_room(self.lkapi, call_id)
                        return
                    except LiveKitError as exc:
                        # LiveKit over a limit said "later" (loaded, as when a dial is late):
                        # one request left the room of a dial that may have rung, its phone
                        # ringing. A stop asks once more at once: it waited out the pause,
                        # its whole budget (ROOM_CLOSE_WAIT_S), and left the room unasked.
                        if (
                            self._closing_rooms.get(call_id, ask_again)
                            and isinstance(exc, LiveKitOverLimit)
                            and pause is not None
                            and not self._stopping.is_set()
                        ):
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._stopping.wait(), pause)
                            continue
                        if (more := self._repeats.due("room deletion")) is not None:
                            logger.warning(
                                "call %s: could not delete its room: %s%s",
                                call_id,
                                exc.reason,
                                more,
                                extra={"call_id": call_id},
                            )
                        return
            finally:
                self._closing_rooms.pop(call_id, None)

        self._spawn(close(), f"{CLOSE_ROOM}{call_id}")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def settle_at_stop(self) -> int:
        """As the server stops, its calls still live. In its embedded sandbox they end with it:
        settled now, as `settle_lost_sandbox_calls` would settle them at the next start, but
        ended now (then, they were dated to the last the server heard of them: a call that
        had talked a minute showed 9 s), and said now (nothing at the stop told that calls
        were live). On a real LiveKit they go on and settle through its webhooks: said. A
        database that fails here leaves them to the next start."""
        try:
            if not self.settings.uses_sandbox:
                if live := await self.store.count_live():
                    logger.info(
                        "stopping with %d call(s) live: they go on in LiveKit and settle"
                        " through its webhooks, when a server takes them",
                        live,
                    )
                return 0
            if not self._lost_sandbox_settled:  # the start's pass failed: an earlier run's
                await self.settle_lost_sandbox_calls()  # calls, dated as that pass dates them
                self._lost_sandbox_settled = True
            now = self.clock()
            lost = await self.store.lost_sandbox_calls(self.instance, now + 1)
            if lost:
                logger.warning(
                    "stopping with %d call(s) live in the embedded sandbox: they end with it,"
                    " settled now",
                    len(lost),
                )
            await self._settle_lost(lost, "sandbox_stopped", _sandbox_stopped, ended_at=now)
            for call in lost:
                self.config.forget_call_soon(call.call_id)
        except DatabaseError as exc:
            logger.warning(
                "could not settle the live calls at the stop (%s): the next start does", exc
            )
            return 0
        return len(lost)

    async def aclose(self) -> None:
        """Wait (briefly) for background room deletions before the LiveKit client closes.

        Grace timers are cancelled at once: the reaper settles their calls after a restart.
        So are the waits for an agent (AGENT_JOIN_TIMEOUT_S) and those after an agent left
        (AGENT_GONE_GRACE_S; each held the stop up to its 5 s): the reaper asks about those
        calls instead (check_lost_agent_waits, check_agent_gone).
        """
        self._stopping.set()  # a room deletion waiting to ask LiveKit again asks now
        waits = ("grace-", "agent-join-", "agent-gone-")
        for task in [t for t in self._background if t.get_name().startswith(waits)]:
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=ROOM_CLOSE_WAIT_S)
        unclosed = sorted(
            t.get_name().removeprefix(CLOSE_ROOM)
            for t in self._background
            if t.get_name().startswith(CLOSE_ROOM)
        )
        if unclosed:
            # Calls that failed to place, whose dial LiveKit may have made after all (a dial
            # that timed out): nothing deletes their rooms later (the reaper asks about live
            # calls only), and a callee who answers would talk to an agent of a failed call.
            logger.warning(
                "stopping with %d room deletion(s) unfinished, LiveKit not answering within"
                " %g s: delete these rooms if they still exist: %s",
                len(unclosed),
                ROOM_CLOSE_WAIT_S,
                ", ".join(unclosed),
            )
        for task in set(self._background):
            task.cancel()
        say_held_back_at_stop(self._placing_outage, self._repeats, logger, "LiveKit")

    async def _retract_config(self, call_id: str, why: str) -> None:
        """Take back the config write of a call never dialled (refused, withdrawn or hung up
        before its dial; `why`, as the log says it): its record, and the seed's flat "latest"
        document if no later write replaced it (a call never placed never was the latest
        call). A failure here is logged, never fatal."""
        try:
            await self.config.retract_call_async(call_id)
        except OSError as exc:
            # What failed the call's own write (a full disk, every file descriptor in use)
            # fails its retraction too: once a minute, with how many (an ERROR per refused
            # call was 449 lines in 23 s with the server out of descriptors).
            if (more := self._repeats.due("config retract")) is not None:
                logger.error(
                    "could not take back the config write of call %s, never placed (tried"
                    " again with the next write): %s%s",
                    call_id,
                    exc,
                    more,
                    extra={"call_id": call_id},
                )
        else:  # its "Configuration updated" line said otherwise
            logger.info(
                "call %s not placed (%s): its config write taken back",
                call_id,
                why,
                extra={"call_id": call_id},
            )

    async def _forget_config(self, call_id: str) -> None:
        """Remove a call's config record; a failure here is logged, never fatal."""
        try:
            await self.config.remove_call_async(call_id)
        except OSError as exc:  # the reaper prunes it later; a full disk fails every one
            if (more := self._repeats.due("config removal")) is not None:
                logger.error("could not remove config record of %s: %s%s", call_id, exc, more)

    # ------------------------------------------------------------------ agent reports

    async def record_reports(
        self, reports: Sequence[AgentReport], behind: float = 0.0
    ) -> list[Applied]:
        """Apply an agent's (verified) reports about its own call, in order, in one
        transaction; UnknownCall if the call is unknown (nothing was stored). `behind`: how
        far the agent's clock is behind this server's (its reports' `at` read that much
        later)."""
        results = await self.store.record_reports(reports, behind)
        listed: dict[str, CallRecord | None] = {}
        for report, applied in zip(reports, results, strict=True):
            if applied.unknown_call:
                raise UnknownCall(report.call_id)
            self._publish(report.call_id, applied)
            self._agent_seen(report.call_id)
            if applied.change is not None:
                logger.debug("call %s: %s reported by its agent", report.call_id, report.kind)
            if report.kind == "do_not_call":  # sent again too, as POST /dnc is (below)
                listed[report.call_id] = applied.after or applied.before
        for call_id, call in listed.items():
            # Its callee asked: the other calls to the number ringing now go too. Also for
            # the report sent again (a duplicate): its first sending's hang-ups may have
            # been cut short (the server killed after the listing's commit), and the
            # agent's retry is the one left to make them.
            if call is None:  # (a duplicate: the call is not read with it)
                call = await self.store.get_call(call_id, with_timeline=False)
            if call is not None:
                await self.hang_up_unanswered_to([call.phone_number], sparing=call_id)
        return results

    # ------------------------------------------------------------------ reading

    async def get(self, call_id: str) -> CallRecord:
        call = await self.store.get_call(call_id)
        if call is None:
            raise UnknownCall(call_id)
        return call

    # ------------------------------------------------------------------ erasure on request

    async def erase(self, call_id: str) -> Erasure:
        """Erase one call's personal data now (POST /calls/{call_id}/erase): what the
        retention erases, and what it was placed with (see programs.erase_calls_now).
        Raises UnknownCall, or CallsStillLive (nothing erased) while it is live."""
        try:
            erasure = await self._erase_once_ended(call_id=call_id)
        except ErasureUnfinished as exc:
            await self._erased(exc.done, f"call {call_id}", unfinished=True)
            raise
        if not erasure.erased and not erasure.live:
            raise UnknownCall(call_id)
        return await self._erased(erasure, f"call {call_id}")

    async def erase_number(self, number: str) -> Erasure:
        """Erase the personal data of every call to `number` (E.164) now (POST /calls/erase),
        all or none: CallsStillLive (nothing erased) while one of them is live. None is no
        error: the answer says so."""
        asked = f"number {mask_phone(number)}"
        try:
            erasure = await self._erase_once_ended(numbers=erased_forms(number))
        except ErasureUnfinished as exc:
            await self._erased(exc.done, asked, unfinished=True)
            raise
        return await self._erased(erasure, asked)

    async def _erase_once_ended(
        self, *, call_id: str | None = None, numbers: Sequence[str] = ()
    ) -> Erasure:
        """The store's erasure; one refused because a campaign call it covers has just ended
        and its campaign has not recorded it yet (its recipient `calling` for a moment more:
        it was answered 409 "still live" for a call already ended) is tried again for
        ERASE_ENDING_WAIT_S, then CallsJustEnded (409 with Retry-After)."""
        waited_until = time.monotonic() + ERASE_ENDING_WAIT_S
        while True:
            erasure = await self.store.erase_calls_now(
                call_id=call_id, numbers=numbers, before_erasing=self._erase_config_first
            )
            if erasure.live or not erasure.ending:
                return erasure
            if time.monotonic() >= waited_until:
                raise CallsJustEnded(erasure.ending)
            await asyncio.sleep(ERASE_ENDING_POLL_S)

    async def _erase_config_first(
        self, call_ids: Sequence[str], placed_with: Sequence[dict[str, Any]]
    ) -> None:
        """What calls about to be erased were placed with, erased from config.json before
        their erasure is written: once it is, the database no longer holds the name and
        instructions to find it by. The unreadable copies set aside (and an unreadable
        config.json) that hold them are removed, the calls' records still there (their
        removal pending) dropped, and the top level (the seed's latest config) put back to
        the defaults if one of them wrote it. Done after the erasure, a failure (a full disk,
        a directory not writable, a write stalled past its deadline) or a server killed
        between the two left them there, answered 200 "erased" all the same, and the retry
        found nothing to look for (get_config_value("caller_name") named the erased callee
        until the next call). Now that holds the erasure up: ErasureHeldUp (503,
        Retry-After), those calls not erased, for the same request to find them again."""
        try:
            await self.config.remove_set_aside_naming_async(placed_with, or_raise=True)
        except OSError as exc:
            raise self._held_up("may be in config.json's copies set aside", exc) from exc
        try:
            await self._drop_config_records(call_ids)
            await self.config.erase_latest_of_async(placed_with, call_ids)
        except OSError as exc:
            raise self._held_up("is in config.json", exc) from exc

    async def _drop_config_records(self, call_ids: Sequence[str]) -> None:
        """The config.json records of `call_ids` still there (their removal pending, or left
        by a crash) dropped; no write when none is."""
        records = await self.config.records_written_async()
        if left := [c for c in call_ids if c in records]:
            await self.config.remove_calls_async(left)

    @staticmethod
    def _held_up(where: str, exc: OSError) -> ErasureHeldUp:
        return ErasureHeldUp(
            f"the erasure is held up: what a call was placed with (its name, its instructions)"
            f" {where}, and {exc.strerror or type(exc).__name__}; the calls left are not"
            " erased: send the same request again once it can be erased there"
        )

    async def _erased(self, erasure: Erasure, asked: str, *, unfinished: bool = False) -> Erasure:
        """What an erasure erased in the database, erased where else it is (config.json):
        it went before the erasure was written (_erase_config_first); looked for again now,
        for a write that put it back meanwhile. Of an erasure the database stopped part way
        (`unfinished`), what it did erase: the configs of its erased calls are erased in the
        database, and a retry would not find them in config.json any more."""
        if erasure.live:
            raise CallsStillLive(erasure.live)
        self.events.publish(erasure.events)
        logger.log(
            logging.WARNING if unfinished else logging.INFO,
            "erased on request the personal data of %d call(s) and %d campaign recipient(s) (%s)%s",
            len(erasure.erased),
            erasure.recipients,
            asked,
            ", then the database stopped it: not the rest" if unfinished else "",
        )
        # A call's config.json record (name, instructions) normally went as it ended; one
        # still there (its removal pending, or left by a crash) goes now.
        try:
            await self._drop_config_records(erasure.erased)
        except OSError as exc:
            logger.error(
                "erased calls' config records could not be removed from config.json (%s);"
                " the reaper prunes them",
                exc.strerror or type(exc).__name__,
            )
        # The seed's "latest config" (config.json's top level) is the last call's: if that
        # is an erased one, it goes back to the defaults (a later call's stays). Unreadable
        # copies set aside that hold an erased call's name or instructions go.
        await self.config.remove_set_aside_naming_async(erasure.placed_with)
        try:
            await self.config.erase_latest_of_async(erasure.placed_with, erasure.erased)
        except OSError as exc:
            logger.error(
                "config.json's latest config (the top level) names an erased call and could"
                " not be erased (%s); the next call placed replaces it",
                exc.strerror or type(exc).__name__,
            )
        return erasure

    # ------------------------------------------------------------------ hanging up

    async def hangup(self, call_id: str, unanswered: bool = False) -> CallRecord:
        """End a live call. It may still be being placed: the placement sees the mark this
        sets, and does not dial (or deletes the room it dialled into), so hang-up wins.
        `unanswered`: only if nobody has answered it (checked as the mark is set).

        Raises UnknownCall, CallAlreadyOver (also once the callee has hung up or the room
        finished: the call is ending, and stays theirs, not canceled; an unanswered one waits
        out the settle grace for a late answer; or, `unanswered`, once it is answered), or
        LiveKitError (the mark stays: try again).
        """
        call = await self.store.get_call(call_id, with_timeline=False)
        if call is None:
            raise UnknownCall(call_id)
        if call.is_final:
            raise CallAlreadyOver(call.status.value)
        owner = call.sandbox_instance
        if (
            self.settings.uses_sandbox
            and owner is not None
            and await other_sandbox_alive(owner, self.settings.port)
        ):
            # Its room is in that server's sandbox: ours would find none and settle the call
            # canceled at once, while it went on there.
            raise CallOnAnotherSandbox(owner)
        marked = await self.store.request_hangup(call_id, unanswered)
        if marked is None:
            raise UnknownCall(call_id)
        if marked.is_final:  # another hang-up (or the call's end) came first
            raise CallAlreadyOver(marked.status.value)
        if unanswered and marked.answered:  # (unmarked, or marked by a hang-up LiveKit failed)
            raise CallAlreadyOver(marked.status.value, "it was answered")
        if not marked.hangup_requested:  # ending already: it stays the callee's or LiveKit's
            why = "the callee has left the call" if marked.callee_left_at else "its room finished"
            raise CallAlreadyOver(marked.status.value, why)
        if await end_room(self.lkapi, call_id):
            logger.info("call %s hang-up requested", call_id, extra={"call_id": call_id})
        else:  # the room is gone (or not made yet): no room_finished will come, settle now
            settled = await self._settle(call_id, "hangup", _hung_up, only_if_changed=True)
            ended = settled.before if settled.change is None else None
            # Settled meanwhile: canceled, by this mark (its room_finished read it) or a
            # concurrent hang-up's: the hang-up was accepted, as both requests were (two at
            # once were both 409 for the cancel they made). Anything else: the call's own end.
            if ended is not None and ended.is_final and ended.status is not Status.CANCELED:
                raise CallAlreadyOver(ended.status.value)
            await self._forget_config(call_id)
        return await self.get(call_id)

    async def hang_up_unanswered_to(
        self, numbers: list[str], *, sparing: str | None = None
    ) -> list[str]:
        """Hang up the calls to `numbers` (just put on the do-not-call list) dialled and not
        answered yet, but `sparing` (the call whose callee asked); the calls hung up (one not
        dialled yet is refused by its dial's look at the list: nobody called, its key free).
        A dial past its last look at the list when the numbers were put on it went on: POST
        /dnc answered 200, and 18-87 ms later the number's line rang (found with two servers
        and a campaign); an agent's do_not_call report listed its callee's number and left
        another call to it ringing (a second campaign's, say). Answered calls go on (the
        callee may be asking on this very call; the agent ends it)."""
        hung_up = []
        for call_id in await self.store.unanswered_calls_to(numbers):
            if call_id == sparing:
                continue
            try:
                # Only if still unanswered as it is marked: each hang-up before it waits on
                # LiveKit, and a call read ringing may be answered by then (it was hung up
                # on its callee).
                await self.hangup(call_id, unanswered=True)
            except (UnknownCall, CallAlreadyOver):
                continue  # ended, or answered, meanwhile
            except (CallOnAnotherSandbox, LiveKitError, DatabaseError) as exc:
                logger.warning(
                    "call %s: its number was put on the do-not-call list while it rang, and it"
                    " could not be hung up: %s; hang it up with POST /calls/%s/hangup",
                    call_id,
                    exc,
                    call_id,
                    extra={"call_id": call_id},
                )
                continue
            except Exception:  # a defect: the calls after it are hung up all the same
                logger.exception(
                    "call %s: its number was put on the do-not-call list while it rang, and"
                    " hanging it up failed; hang it up with POST /calls/%s/hangup",
                    call_id,
                    call_id,
                    extra={"call_id": call_id},
                )
                continue
            hung_up.append(call_id)
            logger.info(
                "call %s hung up: its number was put on the do-not-call list while it rang",
                call_id,
                extra={"call_id": call_id},
            )
        return hung_up

    # ------------------------------------------------------------------ reaping

    @property
    def stale_after_s(self) -> float:
        """How old a call with the default limits is when the reaper settles it as failed."""
        s = self.settings
        limits = s.call_ringing_timeout_s + s.call_max_duration_s
        return limits * s.sandbox_stretch + REAPER_MARGIN_S

    async def reap(self, *, starting: bool = False) -> int:
        """One pass: the settling (`_settle_pass`), then the duties that need no call settled
        first: prune config.json (the settled calls' records too), erase what is past its
        retention, drop old events, what unfinished campaign uploads stored, old rate counts.
        (The events a stopped server left undispatched are taken over on the dispatcher's own
        timer, `EventDispatcher.take_over_every`, not after the settling.) Each duty runs
        whether or not the steps before it failed: chained after the settling, a database
        error in any step before them, pass after pass, left config.json, old events and
        uploads never pruned. A duty's failure is said here, naming it; the settling's is
        raised once the duties ran. How many calls were reaped."""
        failed: Exception | None = None
        reaped = 0
        try:
            reaped = await self._settle_pass(starting)
        except Exception as exc:  # raised once the duties ran
            failed = exc
        now = self.clock()
        duties: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
            ("pruning config.json", self._tend_config),
            ("erasing what is past its retention", lambda: self.erase_past_retention(now)),
            ("dropping old events", lambda: self.purge_old_events(now)),
            ("dropping given-up uploads", lambda: self.discard_given_up_uploads(now)),
            ("dropping old rate counts", lambda: self.store.purge_rate_buckets(now)),
        )
        for name, duty in duties:
            try:
                await duty()
            except Exception as exc:
                self._say_reaper_failed(exc, name)
        if failed is not None:
            raise failed
        return reaped

    async def _settle_pass(self, starting: bool) -> int:
        """(The first time) settle the calls an earlier run of this server left in
        its embedded sandbox; settle calls whose room finished unanswered more than the grace
        ago, calls never dialled, calls whose room LiveKit no longer has, and last, calls
        stuck past any possible end as failed (answered: as their room_finished would have
        ended them), ended when last heard of. Calls whose wait for their agent was lost with
        its server are asked about (check_lost_agent_waits)."""
        if starting:  # first what the last run left undispatched, before this pass writes
            # events of its own (taken over after it, they were dispatched twice)
            await self.events.recover(restarted=True)
        if not self._lost_sandbox_settled:  # once: the first pass, before serving
            await self.settle_lost_sandbox_calls()
            self._lost_sandbox_settled = True
        now = self.clock()
        grace, late_grace = self.settings.calls_settle_grace_s, self._late_grace()
        finished = await self.store.graceless_finished(now - grace, now - late_grace)
        for call_id in finished:  # as _settle_all, each knowing whether its agent came
            with self._one_call(call_id, "room finished"):
                await self._settle(
                    call_id, GRACE_OVER, await self._grace_over(call_id), only_if_changed=True
                )
        # Past the bound (a step of the clock is no time run, for a placement as for a live
        # call), or (at once) left by an earlier run of this server: its placements ended with
        # it (another server's, younger than the bound, may be under way).
        steps = self.wall_steps.seen()
        undialled = await self.store.never_dialled(
            now - PLACEMENT_BOUND_S, steps, Placer(self.instance, self.run, self.started_at)
        )
        for call_id in undialled:  # nobody was called: its key and rate share are free again
            with self._one_call(call_id, "never dialled"):
                await self._settle_never_dialled(call_id)
        await self.settle_gone_rooms(now)
        await self.check_lost_agent_waits(now)
        await self.check_agent_gone(now)
        # Last: what the rules above can tell settles by them (answered calls whose room is
        # gone completed, never-dialled ones released). First, a pass past the bound after an
        # outage settled them all "failed", and kept a never-dialled call's key bound.
        latest = steps[-1] if steps else (0.0, 0.0)
        if latest[0] != self._step_said_at:  # once a step
            self._step_said_at = latest[0]
            if latest[1]:
                logger.warning(
                    "this server's clock stepped forward by %.0f s while it ran: the calls"
                    " placed before are found stale by the time they ran",
                    latest[1],
                )
        stale = await self.store.stale_live_calls(
            now,
            REAPER_MARGIN_S,
            self.settings.sandbox_stretch,
            # A room that finished lately waits out the grace; one that finished long ago and
            # is still live (the grace rule left it: never dialled) goes by this bound.
            finished_before=now - self.settings.calls_settle_grace_s - REAPER_MARGIN_S,
            steps=steps,
        )
        await self._settle_unheard(stale, "reaped", _NO_FINAL_EVENT)
        return len(stale)

    async def discard_given_up_uploads(self, now: float) -> int:
        """Remove the recipients stored by campaign uploads that failed, or whose server
        stopped mid-way (not touched for UPLOAD_GIVEN_UP_S), PURGE_BATCH a transaction."""
        return await _in_batches(
            lambda limit: self.store.discard_given_up_upload(now - UPLOAD_GIVEN_UP_S, limit),
            PURGE_BATCH,
            PURGE_BUDGET_S,
            (
                logging.INFO,
                "removed %d recipient(s) stored by campaign uploads that did not finish",
            ),
            until_none=True,  # each step removes one upload's rows at most: on to the next
        )

    async def purge_old_events(self, now: float) -> int:
        """Drop the events dispatched over EVENT_RETENTION_S ago whose deliveries are over,
        PURGE_BATCH rows of each a transaction, for PURGE_BUDGET_S a pass at most (the rest in
        the next pass): all in one, 406,000 of them held the database 11 s (probe AQ)."""
        before = now - EVENT_RETENTION_S
        return await _in_batches(
            lambda limit: self.store.purge_dispatched_events(before, limit),
            PURGE_BATCH,
            PURGE_BUDGET_S,
            (logging.DEBUG, "purged %d old event(s) and deliveries"),
        )

    async def erase_past_retention(self, now: float) -> int:
        """Erase the conversations of calls past CALL_DATA_RETENTION_DAYS, ERASE_BATCH calls a
        transaction, for ERASE_BUDGET_S a pass at most (the rest in the next pass). All in
        one transaction, 200,000 calls kept the server from listening for 107 s at start-up
        (and took 227 MB), and would have held every request that needs the database."""
        before = now - self.settings.call_data_retention_days * 86400
        return await _in_batches(
            lambda limit: self.store.erase_call_data(before, limit),
            ERASE_BATCH,
            ERASE_BUDGET_S,
            (logging.INFO, "erased the conversations of %d call(s) past their retention"),
        )

    async def settle_gone_rooms(self, now: float) -> int:
        """Finish the calls whose room LiveKit no longer has though no room_finished came (see
        ROOM_CHECK_AFTER_S), as that event would have: answered calls settle by what is
        known, unanswered ones after the grace. On the embedded sandbox only this server's
        own rooms are asked about (another server's live in its own sandbox); on a real
        LiveKit, only calls placed through one (never a sandbox's). When LiveKit
        cannot answer, nothing is settled (once a minute in the log); the next pass asks
        again.

        Not before this run of the server has run the late grace (REPORTS_RETRY_S): the rooms
        that went while it was down went with no webhook it could take, and the agents'
        reports it could not take then are retried up to that far apart. A call is dated to
        the last the server heard of it: finished by the first pass after a restart (at once),
        before its agent's reports came, an answered call read the talk_s of its answer and
        first report (0.25 s for a 5 s conversation, beside the transcript that came a second
        later). So after the server did not run (SIGSTOPped, a VM paused; see run_reaper):
        continued, its overdue pass came at once (0.25 s for a 5 s conversation, SIGSTOPped
        75 s). The time run is the monotonic clock's: by the wall clock, after a step back of
        an hour a gone room's call stayed live (counted against CALLS_MAX_ACTIVE) for that
        hour, or until the reaper's bound for a stale call settled it 'no final event'."""
        if self.monotonic() - self._running_since < self._late_grace():
            return 0
        owner = self.instance if self.settings.uses_sandbox else None
        candidates = await self.store.unfinished_rooms(now - ROOM_CHECK_AFTER_S, owner)
        if not candidates:
            return 0
        try:
            alive = await rooms_alive(self.lkapi, [c.call_id for c in candidates])
        except LiveKitError as exc:
            if (more := self._repeats.due("rooms")) is not None:
                logger.warning("could not ask LiveKit which rooms are alive: %s%s", exc, more)
            return 0
        gone = [c for c in candidates if c.call_id not in alive]
        for call in gone:
            # It went unseen: the last the server heard of the call stands for its end.
            event = RoomEvent(
                "room_finished",
                f"{ROOM_GONE_EVENT_PREFIX}{call.call_id}",
                call.call_id,
                created_at=call.last_seen,
            )
            with self._one_call(call.call_id, "room gone"):
                await self.handle_event(event)
                # Said once it is done: a call that could not be finished was said to be
                # finished every pass (its failure is said once a minute, above).
                logger.warning(
                    "call %s: its room is gone but room_finished never came; finished it",
                    call.call_id,
                    extra={"call_id": call.call_id},
                )
        if gone and (more := self._repeats.due("rooms gone")) is not None:
            # Else nothing told the operator why: LiveKit's webhooks may not reach us at all
            # (its webhook URL wrong, a firewall), and every call stayed live for a minute.
            # (by the clock as it is said: one heard during the pass, after its `now`, was
            # said to be '-0 s ago')
            heard = self.webhook_heard_at
            ago = None if heard is None else max(0.0, self.clock() - heard)
            last = "none since it started" if ago is None else f"{ago:.0f} s ago"
            logger.warning(
                "%d call(s) finished with no room_finished from LiveKit (its last webhook"
                " here: %s): unless LiveKit gave them up in an outage, check that LiveKit's"
                " webhook URL is this server's %s (or its load balancer's)%s",
                len(gone),
                last,
                self.settings.webhook_path,
                more,
            )
        return len(gone)

    async def check_lost_agent_waits(self, now: float) -> int:
        """The wait for a call's agent (AGENT_JOIN_TIMEOUT_S, `_await_agent`) is a timer in
        the server that dialled it: a server stopped or killed in between lost it, and a
        call no agent came to was left to its callee, who heard silence until they hung up
        (then read `completed`) or max_duration_s. The calls dialled over the timeout ago
        that no agent has reported on, and that no wait of this run covered, are asked about
        here as the wait would have asked, each once (again by the next pass if LiveKit or
        the database could not say). How many were asked."""
        timeout_s = self.settings.agent_join_timeout_s
        if timeout_s <= 0:
            return 0
        owner = self.instance if self.settings.uses_sandbox else None
        since = now - timeout_s * self.settings.time_scale
        candidates = set(await self.store.unreported_dialled(since, owner))
        self._agent_asked &= candidates | self._agent_waits.keys()  # bounded by live calls
        unasked = sorted(candidates - self._agent_asked)
        for call_id in unasked:
            with self._one_call(call_id, "no agent came"):  # not asked: asked again next pass
                if not await self._end_if_no_agent(call_id, timeout_s):
                    break  # LiveKit (or the database) cannot say: the rest wait for the next pass
                self._agent_asked.add(call_id)
        return len(unasked)

    async def settle_lost_sandbox_calls(self) -> int:
        """Settle the calls an earlier run of this server placed into its embedded sandbox
        and left live: their rooms ended with that process, so no webhook or agent report
        will ever come for them, and the reaper's bound would keep them live (and counting
        against CALLS_MAX_ACTIVE) for minutes. An answered one settles as its room_finished
        would have, an unanswered one failed (canceled if a hang-up was asked), with their
        events (`_sandbox_room_gone`); a call whose room had finished waits for the grace
        rule, and one never dialled is released and settled as the never-dialled rule does.

        This server's own (by host name, port and listen address), and those of other servers
        of this machine that do not listen now (started on another PORT, or HOST spelled
        otherwise: their calls stayed live until the reaper's bound, up to a day), and only
        calls created before this service was made: the calls this run's sandbox holds are
        never touched (the campaign scheduler may place some while the first pass runs), nor
        those of servers that listen, or of other machines, on the same database. A server on
        a real LiveKit has none of its own unless it ran on the sandbox before. The reaper
        runs this once, in its first pass (before the server serves), or in the next pass if
        that one failed: no later pass compares creation times with a wall clock that may have
        been stepped back since.
        """
        lost = await self.store.lost_sandbox_calls(self.instance, self.started_at)
        if lost:
            logger.warning(
                "settling %d call(s) this server (%s) left live when it stopped: their rooms "
                "were in its embedded sandbox, which stopped with it",
                len(lost),
                self.instance,
            )
        for owner in await self.store.sandbox_owners(self.started_at):
            if owner == self.instance or await sandbox_listening(owner) is not False:
                continue
            theirs = await self.store.lost_sandbox_calls(owner, self.started_at)
            logger.warning(
                "settling %d call(s) the server %s of this machine left live: it does not "
                "listen any more, and their rooms were in its embedded sandbox",
                len(theirs),
                owner,
            )
            lost += theirs
        if self.settings.uses_sandbox:
            # Placed by a release from before calls named their sandbox (schema 11): on the
            # sandbox they can be live nowhere now (a database is never shared with servers
            # on a real LiveKit), and waited out the reaper's bound, ~12 minutes, holding
            # CALLS_MAX_ACTIVE and a campaign's slots (probe AV).
            unnamed = await self.store.lost_sandbox_calls(None, self.started_at)
            if unnamed:
                logger.warning(
                    "settling %d call(s) an earlier release left live on its embedded sandbox"
                    " (it did not record which server's sandbox held them)",
                    len(unnamed),
                )
            lost += unnamed
        await self._settle_lost(lost, "sandbox_restarted", _sandbox_room_gone)
        return len(lost)

    async def _settle_all(self, call_ids: Iterable[str], kind: str, decide: Decide) -> None:
        """The reaper's decisions: a call they leave as it is gets no timeline line (each pass
        on each server added one, 33 in a minute with three servers)."""
        for call_id in call_ids:
            await self._settle(call_id, kind, decide, only_if_changed=True)

    async def _settle_unheard(
        self, calls: Iterable[LostCall], kind: str, decide: Decide, ended_at: float | None = None
    ) -> None:
        """`_settle_all` for calls over without a word of it: each ended when the server last
        heard of it (dated to the pass, an answered one's talk_s was the reaper's bound), or
        at `ended_at` when that is known (the stop that ended them)."""
        for call in calls:
            end = call.last_seen if ended_at is None else ended_at
            with self._one_call(call.call_id, kind):
                await self._settle(call.call_id, kind, decide, only_if_changed=True, ended_at=end)

    async def _settle_lost(
        self, lost: list[LostCall], kind: str, decide: Decide, ended_at: float | None = None
    ) -> None:
        """Calls whose rooms went with an embedded sandbox: the dialled ones as `decide` says
        (`_settle_unheard`); nobody was called by the others: their keys and rate shares are
        free again (as in `reap`)."""
        await self._settle_unheard([c for c in lost if c.dialled], kind, decide, ended_at)
        for call in lost:
            if not call.dialled:
                with self._one_call(call.call_id, "never dialled"):
                    await self._settle_never_dialled(call.call_id)

    @contextlib.contextmanager
    def _one_call(self, call_id: str, rule: str) -> Iterator[None]:
        """One call's settling by a reaper rule. A defect of that call's own (a row that no
        longer reads: its config hand-edited, written by another release) is said, once a
        minute for all such calls (a release that wrote them all would flood the log), and
        the pass goes on with the other calls and rules; the next
        pass tries it again. Raised out of the loop, it stopped every pass at that call: the
        calls after it, and every rule after its rule (never-dialled calls holding their
        keys, rooms gone, stale calls), were never settled. A database error (an outage, every
        call's fails alike) ends the pass as before."""
        try:
            yield
        except DatabaseError:
            raise
        except Exception as exc:
            if (more := self._repeats.due("reaper call")) is not None:
                logger.error(
                    "reaper: call %s could not be settled (%s): %s: %s; it stays live, the"
                    " other calls are settled, and the next pass tries it again%s",
                    call_id,
                    rule,
                    type(exc).__name__,
                    exc,
                    more,
                    exc_info=exc,
                    extra={"call_id": call_id},
                )

    async def _settle_never_dialled(self, call_id: str) -> None:
        """Settled and released in one transaction, unless its dial was marked meanwhile."""
        applied = await self.store.settle_never_dialled(call_id, _never_dialled)
        self._publish(call_id, applied)

    async def _tend_config(self) -> None:
        """The pass's config.json work. A config.json that cannot be written (its disk full)
        is said once a minute and the rest of the pass goes on: it stopped every pass, the
        retention's erasure after it (conversations kept past CALL_DATA_RETENTION_DAYS for as
        long as the disk stayed full) and the take-over of a dead server's events with it."""
        try:
            await self.prune_config()
            await self.erase_latest_if_erased_elsewhere()
            await self.remove_set_aside_of_erased()
        except OSError as exc:
            if (more := self._repeats.due("reaper config")) is not None:
                logger.error(
                    "reaper: %s could not be pruned (%s); the rest of the pass goes on%s",
                    self.config.path,
                    exc.strerror or exc,
                    more,
                )

    async def prune_config(self) -> int:
        """Drop config.json records of calls that are over or unknown to the database.

        A record whose call is unknown is kept while young (not dated ahead of now): a call
        being placed writes its record before its row. Records past the TTL go too (the
        store's own rule).
        """
        if not await aiofiles.os.path.exists(self.config.path):
            return 0
        records = await self.config.records_written_async()
        # Known first, live second: a row may appear between the two reads (the call being
        # placed) and a live call may end, never the other way round; in the other order, a
        # call recorded between them would be "known and not live" and lose its record.
        known = await self.store.known_among(list(records))
        live = await self.store.live_among([c for c in records if c in known])
        now = self.clock()
        young, expired = now - UNRECORDED_CONFIG_GRACE_S, now - self.config.record_ttl_s
        ahead = now + FUTURE_CONFIG_SKEW_S
        over = {
            call_id
            for call_id, written_at in records.items()
            if call_id not in live and (call_id in known or not young <= written_at <= ahead)
        }
        aged = [c for c, written_at in records.items() if written_at < expired and c not in over]
        removed = await self.config.remove_calls_async([*over, *aged])
        # Records of ids the database never had (a script's update_config(call_id=...)) were
        # said to be "of calls that are over": the script's author looked for calls.
        unknown = len(over - known)
        of_unknown = (
            f" ({unknown} of call ids the calls database does not know, written"
            f" {UNRECORDED_CONFIG_GRACE_S:.0f} s ago or more)"
            if unknown
            else ""
        )
        if removed and aged:
            logger.warning(
                "pruned %d config record(s): %d of calls still live, past CONFIG_RECORD_TTL_S"
                " (%.0f s; their agents use the dispatch's snapshot), the rest of calls over%s",
                removed,
                len(aged),
                self.config.record_ttl_s,
                of_unknown,
            )
        elif removed:
            logger.info("pruned %d config record(s) of calls that are over%s", removed, of_unknown)
        return removed

    async def erase_latest_if_erased_elsewhere(self) -> bool:
        """config.json's flat document (the seed's latest config) back to the defaults when
        the call of this server whose placement wrote it has had its personal data erased on
        request through another server (several on one database): that erasure reached the
        other server's config.json only, and this one kept the callee's name, instructions
        and additional_params until its next call. The call is found by when the document
        was written (its row follows its config.json write by moments) and by this server's
        name, which its restarts keep. Whether it was erased."""
        latest = await self.config.latest_written_async()
        written_at = latest.get("last_updated") if latest else None
        if latest is None or not names_someone(latest) or type(written_at) is not float:
            return False  # nobody's data, or no time to find its call by (written by hand)
        erased = await self._erased_writers_of(latest, written_at)
        if not erased:
            return False
        if not await self.config.erase_latest_if_async(latest):
            return False
        logger.info(
            "config.json's latest config was written by a call erased on request through"
            " another server (%s): back to the defaults",
            ", ".join(erased),
        )
        return True

    async def remove_set_aside_of_erased(self) -> int:
        """Remove the unreadable config.json copies set aside here that hold a call of this
        server's erased on request: its record (by its id), or a top level written as it was
        placed (by when, as erase_latest_if_erased_elsewhere finds it). An erasure finds the
        copies of its own server's directory by the name and instructions: through another
        server, a copy set aside here (by the next call's write, the file unreadable) kept
        them for good, and so did one of a call placed with neither, only
        additional_params, on any server. How many were removed."""
        copies = await self.config.set_aside_async()
        if not copies:
            return 0
        named = sorted(set().union(*(c.call_ids for c in copies)))
        erased = await self.store.erased_among(named) if named else set()
        holding = []
        for copy in copies:
            written_at = copy.top_written_at  # its top level's writer erased, too
            if copy.call_ids & erased or (
                written_at is not None and await self._erased_writers_of(copy.top, written_at)
            ):
                holding.append(copy.name)
        if not holding:
            return 0
        return await self.config.remove_set_aside_async(holding, "a call's data erased on request")

    async def _erased_writers_of(
        self, top: Mapping[str, Any] | None, written_at: float
    ) -> list[str]:
        """The calls of this server erased on request whose placement wrote config.json's
        flat document `top`, written at `written_at`: found by when (a call's row follows
        its config.json write by moments, within LATEST_RECORDED_WITHIN_S) and by this
        server's name, which its restarts keep. None ([]) when no call placed then was erased,
        or one that was not wrote it (two placed alike). `top` None (a copy set aside whose
        top level does not read): any erased call placed then. Any call erased within that
        minute removed a copy set aside: Alice's top level set aside by Bob's write went
        when Bob was erased, the operator's copy of config.json with it."""
        placed = await self.store.placed_between(
            self.instance, written_at, written_at + LATEST_RECORDED_WITHIN_S, LATEST_CANDIDATES
        )
        # Erased on request: its name is gone (the retention's erasure keeps names).
        erased = [c.call_id for c in placed if c.data_erased_at is not None and not c.caller_name]
        if not erased:
            return []
        # One not erased wrote it (two placed alike): not theirs.
        if top is not None and any(
            c.config is not None and c.call_id not in erased and latest_written_by(top, c.config)
            for c in placed
        ):
            return []
        return erased

    async def reap_logged(self, *, starting: bool = False) -> None:
        """One reaper pass; a failure is logged (the next pass tries again)."""
        try:
            await self.reap(starting=starting)
        except Exception as exc:
            self._say_reaper_failed(exc)

    def _say_reaper_failed(self, exc: Exception, duty: str = "") -> None:
        """An outage (every step fails) once a minute in all; a defect with its traceback,
        once a minute for each duty (`duty`: which; none, the settling)."""
        where = f" ({duty})" if duty else ""
        if isinstance(exc, DatabaseError | OSError):
            if (more := self._repeats.due("reaper")) is not None:
                logger.error("reaper pass failed%s: %s%s", where, exc, more)
        elif (more := self._repeats.due(f"reaper defect{where}")) is not None:
            logger.error(
                "reaper pass failed%s; the next one tries again%s", where, more, exc_info=exc
            )

    async def run_reaper(self) -> None:
        """A pass every REAPER_INTERVAL_S (the first one runs as the server starts); one that
        runs past REAPER_SLOW_S is said, with where it waits."""
        slow = SlowSteps("reaper", REAPER_SLOW_S)
        while True:
            due = time.monotonic() + self.settings.reaper_interval_s
            await asyncio.sleep(self.settings.reaper_interval_s)
            if time.monotonic() - due > LATE_FINISH_S:  # the server did not run meanwhile
                self._running_since = self.monotonic()
            slow.begin(lambda: "a pass")
            try:
                await self.reap_logged()
            finally:
                slow.end()


def _signal_detail(signal: Signal) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if signal.sip_participant:
        detail["sip_call_status"] = signal.sip_call_status
    if signal.disconnect_reason:
        detail["disconnect_reason"] = signal.disconnect_reason
    if signal.sip_status_code is not None:
        detail["sip_status"] = signal.sip_status_code
    if signal.room_outcome:
        detail["room_outcome"] = signal.room_outcome
    if signal.room_reason:
        detail["room_reason"] = signal.room_reason
    return detail


# ----------------------------------------------------------------------------- subscribers


def _seconds_between(start_iso: str | None, end: float, end_iso: str | None = None) -> float:
    """From `start_iso` to `end_iso` (the call's end, when it has one: what talk and ring
    times are counted to), else to `end`."""
    from datetime import datetime

    if not start_iso:
        return 0.0
    if end_iso:
        end = datetime.fromisoformat(end_iso).timestamp()
    return max(0.0, end - datetime.fromisoformat(start_iso).timestamp())


async def log_status_change(event: CallEvent) -> None:
    """One log line per status change: `call call-ab12 +1•••7890 ringing -> completed (42 s)`,
    `call call-cd34 +1•••0123 (campaign cmp-ef56) dialing -> in_progress (3 s)` for a campaign's
    call."""
    data = event.data
    if event.type not in STATUS_EVENTS or (
        event.type == CALL_ANSWERED and data["status"] != "in_progress"
    ):
        return  # a new call is logged as it is placed; a late answer is logged with its end
    reason = data.get("reason")
    campaign_id = data.get("campaign_id")
    logger.info(
        "call %s %s%s %s -> %s (%.0f s)%s",
        event.call_id,
        mask_phone(str(data.get("phone_number", ""))),
        f" (campaign {campaign_id})" if campaign_id else "",
        event.from_status,
        data["status"],
        _seconds_between(data.get("created_at"), event.created_at, data.get("ended_at")),
        f" [{reason}]" if reason and data["status"] in {s.value for s in FINAL_STATUSES} else "",
        extra={"call_id": event.call_id, "status": data["status"], "campaign_id": campaign_id},
    )


def ended_at_the_trunk(event: CallEvent) -> str | None:
    """What to check on the outbound trunk if `event` is a call's end that blames it (a
    failure `trunk_fault` names), else None."""
    reason = event.data.get("reason")
    if event.type != CALL_ENDED or event.data.get("status") != Status.FAILED.value:
        return None
    return trunk_fault(reason if isinstance(reason, str) else None)


# How the agent begins the reason it records on the room when it fails (agent/worker.py:
# a provider's error that closed its session, any other error; agent/config_source.py: no
# config for the call, or one it could not use).
AGENT_FAILURES = (
    "the agent's session failed",
    "the agent failed",
    "the agent had no config",
    "the agent could not use this call's config",
)


def ended_by_the_agents_failure(event: CallEvent) -> str | None:
    """What to check if `event` is the end of a call its agent failed (the reason it recorded:
    a provider refusing its key, its credits or quota spent, down), else None. Whatever the
    status it settled (`failed`, `completed` once it had spoken, `voicemail`)."""
    reason = event.data.get("reason")
    if event.type != CALL_ENDED or not isinstance(reason, str):
        return None
    if not reason.startswith(AGENT_FAILURES):
        return None
    return (
        "check the agent's log, and its providers' API keys, credits and quotas"
        " (OPENAI_API_KEY, DEEPGRAM_API_KEY, CARTESIA_API_KEY)"
    )


def warn_of_trunk_faults(repeats: Repeats) -> Callable[[CallEvent], Coroutine[Any, Any, None]]:
    """A WARNING for a call that failed at the carrier in a way that blames the outbound
    trunk (SIP 401/403/407, 5xx), once a minute per kind (`repeats`): a trunk refused by its
    carrier fails every call, each otherwise one INFO status line among the others."""

    async def warn(event: CallEvent) -> None:
        reason = event.data.get("reason")
        fault = ended_at_the_trunk(event)
        if fault is not None and (more := repeats.due(fault)) is not None:
            # A campaign's call names its campaign, as its status line does (and JSON logs
            # filtered by campaign_id show the warning with the campaign's other lines).
            campaign_id = event.data.get("campaign_id")
            campaign_id = campaign_id if isinstance(campaign_id, str) else None
            logger.warning(
                "call %s%s failed: %s; %s (the outbound trunk SIP_OUTBOUND_TRUNK_ID names, in"
                " LiveKit): while calls fail so, no call reaches anyone%s",
                event.call_id,
                f" (campaign {campaign_id})" if campaign_id else "",
                reason,
                fault,
                more,
                extra={
                    "call_id": event.call_id,
                    "status": Status.FAILED.value,
                    "campaign_id": campaign_id,
                },
            )

    return warn


def warn_of_busy_runs(repeats: Repeats, least: int = BUSY_RUN_WARN) -> Subscriber:
    """A WARNING when `least` calls in a row ended busy (no call ending otherwise between
    them), once a minute (`repeats`): LiveKit's SIP service files a carrier's refusal of the
    trunk itself (its credentials, SIP 401/407; its account or caller number, 403; its call
    rate) under USER_REJECTED, as a callee's busy line (livekit/sip classifyInviteError), and
    gives the webhook no SIP code: a trunk refused for every call made every call `busy`,
    each one INFO status line, and a campaign retried busy numbers on through its list."""

    def say(run: int, event: CallEvent, more: str) -> None:
        logger.warning(
            "the last %d calls all ended busy (the last, call %s: %s) and none ended"
            " otherwise: LiveKit says a carrier's refusal of the trunk (its credentials,"
            " SIP 401/407; its account or caller number, 403; its call rate) as busy: if"
            " these numbers are not all busy, check the outbound trunk"
            " SIP_OUTBOUND_TRUNK_ID names, in LiveKit, and its carrier%s",
            run,
            event.call_id,
            event.data.get("reason"),
            more,
            extra={"call_id": event.call_id, "status": Status.BUSY.value},
        )

    return warn_of_runs(
        "busy run", lambda data: data.get("status") == Status.BUSY.value, least, repeats, say
    )


def count_events(metrics: Metrics) -> Callable[[CallEvent], None]:
    """Counts each event once, as its writer publishes it (EventDispatcher.count_new): in
    the writer's path, after its commit, so it raises nothing."""

    def count(event: CallEvent) -> None:
        metrics.call_events.labels(type=event.type).inc()
        if event.type == "call.ended":
            metrics.calls_ended.labels(status=str(event.data.get("status"))).inc()

    return count
