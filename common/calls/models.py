"""What a call is on our side, as the service, the storage backends and the API share it.

Plain frozen dataclasses: the storage backends build them from rows, the service reasons
about them, and `to_json` is what `GET /calls/{id}` shows (and customer webhooks carry).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from common.calls.outcomes import FINAL_STATUSES, CallState, Change, Status
from common.contracts import CallReport, TranscriptTurn
from common.times import iso_time

# How long after a call ended its agent's final report may still come (post-call analysis
# runs after the call); after that, a call with none shows report_status "unavailable" (at
# once, a call no agent was dispatched to or joined: CallRecord.no_report).
REPORT_WAIT_S = 600.0


# The request hash of an Idempotency-Key whose call's data was erased on request: the hash of
# the request (its name and instructions) was what was left of them, and a guess of the two
# could be confirmed against it. A key so bound takes any retry (its answer holds no data).
ERASED_REQUEST_HASH = "erased"
# Campaign attempts are placed under Idempotency-Keys of this prefix, for the client that
# created the campaign: a client's own key may not start with it, or it could take an
# attempt's key before the attempt does (and the attempt would never be placed).
CAMPAIGN_KEY_PREFIX = "campaign:"


@dataclass(frozen=True)
class IdempotencyClaim:
    """An Idempotency-Key to record with a new call: whose it is and what it was sent with.

    `request_hash` covers the request's JSON document, not its bytes: a retry that sends the
    same document with its keys in another order, other spacing or other escapes is the
    same request. `raw_hash` (the bytes' hash, what keys were bound with before) lets a key
    bound by an older server still match a retry of the very same bytes.
    """

    client: str
    key: str
    request_hash: str
    raw_hash: str | None = None

    @classmethod
    def of(
        cls, client: str, key: str, document: object, raw: bytes | None = None
    ) -> IdempotencyClaim:
        """The claim of `key` for a request whose JSON document is `document` (its bytes
        `raw`, if it came as bytes)."""
        return cls(
            client,
            _sha256(key.encode()),
            _sha256(canonical_json(document)),
            None if raw is None else _sha256(raw),
        )

    @classmethod
    def of_digest(cls, client: str, key: str, request_hash: str) -> IdempotencyClaim:
        """The claim of `key` for a request its caller digested itself (`request_hash`)."""
        return cls(client, _sha256(key.encode()), request_hash)

    def matches(self, stored_hash: str) -> bool:
        """Whether a key bound with `stored_hash` was bound by this same request (one whose
        call was erased since, by any: what it was sent with is no longer known)."""
        return stored_hash in (self.request_hash, self.raw_hash, ERASED_REQUEST_HASH)


def canonical_json(document: object) -> bytes:
    """One spelling of a JSON document: keys sorted, no spaces, non-ASCII escaped."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    """What an Idempotency-Key is bound to: its call, and the answer once one was given.

    `status` and `body` are None while the call is being placed (or when the server died
    before answering): a retry then gets the call as it is, never a second call.
    """

    call_id: str
    request_hash: str
    status: int | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewCall:
    call_id: str
    phone_number: str
    caller_name: str
    language: str
    emotion: str
    ringing_timeout_s: int = 30
    max_duration_s: int = 600
    config: dict[str, Any] = field(default_factory=dict)
    client: str = ""
    """Whose call it is (the API token's holder, or the client address): the rate limit's key."""
    webhook_url: str | None = None
    """Where its events are pushed (customer webhooks), if anywhere."""
    campaign: AttemptRef | None = None
    """The campaign attempt this call is, linked to it in the transaction that records it."""
    sandbox_instance: str | None = None
    """The server (Settings.sandbox_owner) whose embedded sandbox the call's room is in; None
    on a real LiveKit. That room ends with that server's process, and no webhook comes for
    it."""
    placed_by: tuple[str, str] | None = None
    """The server placing it (Settings.instance_name) and its run (drawn at each start): a
    restart of that server settles the calls its earlier run left undialled at once."""
    hold_deliveries: bool = False
    """Its customer webhook deliveries wait until its dial has started: a client waits for
    the answer, and a call refused before its dial is answered an error without its id."""


@dataclass(frozen=True)
class DncEntry:
    """A number on the do-not-call list: who put it there (api, agent) and, from an agent,
    during which call."""

    number: str
    source: str
    call_id: str | None
    added_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "phone_number": self.number,
            "source": self.source,
            "call_id": self.call_id,
            "added_at": iso_time(self.added_at),
        }


@dataclass(frozen=True)
class AttemptRef:
    """One attempt of a campaign at one recipient: unique, written before it is placed."""

    campaign_id: str
    idx: int
    attempt: int


@dataclass(frozen=True)
class TimelineEntry:
    kind: str
    from_status: str | None
    to_status: str | None
    detail: dict[str, Any]
    at: float
    event_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        from common.calls.views import TimelineEntryView, dump

        return dump(TimelineEntryView.of(self))


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    phone_number: str
    caller_name: str
    language: str
    emotion: str
    status: Status
    outcome: str | None
    reason: str | None
    answered: bool
    hangup_requested: bool
    created_at: float
    answered_at: float | None
    ended_at: float | None
    updated_at: float
    timeline: tuple[TimelineEntry, ...] = field(default=())
    ringing_timeout_s: int | None = None
    max_duration_s: int | None = None
    config: dict[str, Any] | None = None
    room_finished_at: float | None = None
    callee_left_at: float | None = None
    dial_started_at: float | None = None
    sandbox_instance: str | None = None
    """The server whose embedded sandbox holds the call's room (None: a real LiveKit)."""
    """When the callee's leg left the room (the call is ending, whatever comes next)."""
    amd: str | None = None
    ended_by: str | None = None
    report: CallReport | None = None
    """The agent's final report (None until it arrives)."""
    turns: tuple[TranscriptTurn, ...] = ()
    """The transcript turns reported so far (read with the timeline, before the final report)."""
    data_erased_at: float | None = None
    webhook_url: str | None = None
    campaign_id: str | None = None
    deliveries_held: bool = False
    """Its customer webhook deliveries are not made yet (NewCall.hold_deliveries)."""
    no_report: bool = False
    """It ended with no agent to report on it (Change.no_report): no report will come."""
    hangup_for_dnc: bool = False
    """Its hang-up was asked for because its number was put on the do-not-call list."""

    @property
    def state(self) -> CallState:
        return CallState(
            self.status,
            self.answered,
            self.hangup_requested,
            self.room_finished_at is not None,
            self.amd,
            self.dial_started_at is not None,
            self.callee_left_at is not None,
            hangup_for_dnc=self.hangup_for_dnc,
        )

    @property
    def transcript(self) -> tuple[TranscriptTurn, ...]:
        """The conversation: the final report's, else the turns reported so far."""
        return tuple(self.report.transcript) if self.report is not None else self.turns

    def report_status(self, now: float) -> str:
        """complete (the final report arrived), unavailable (it ended with no agent to report
        on it, or over REPORT_WAIT_S ago and the agent never reported), else pending."""
        if self.report is not None:
            return "complete"
        if self.no_report:
            return "unavailable"
        if self.ended_at is not None and self.ended_at < now - REPORT_WAIT_S:
            return "unavailable"
        return "pending"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def duration_s(self, now: float | None = None) -> float:
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return max(0.0, end - self.created_at)

    @property
    def ring_s(self) -> float | None:
        """From placing the call to the answer (or to its end, if never answered)."""
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return None if end is None else round(max(0.0, end - self.created_at), 3)

    @property
    def talk_s(self) -> float | None:
        """From the answer to the end; 0 for a call that ended unanswered, None while live."""
        if self.ended_at is None:
            return None
        if self.answered_at is None:
            return 0.0
        return round(max(0.0, self.ended_at - self.answered_at), 3)

    def to_json(self, *, with_timeline: bool = True) -> dict[str, Any]:
        """As `GET /calls/{id}` shows it (without the timeline and config: as lists do)."""
        from common.calls.views import CallSummary, CallView, dump

        return dump(CallView.of(self) if with_timeline else CallSummary.of(self))


@dataclass(frozen=True)
class LostCall:
    """A live call whose room went with an earlier run of its server's embedded sandbox."""

    call_id: str
    dialled: bool  # its dial had started
    last_seen: float  # the last the server heard of it: its last change, event or report


@dataclass(frozen=True)
class CallEvent:
    """One committed change of a call, as the transactional outbox holds it.

    `type` is `call.dialing`, `call.ringing`, `call.answered` or `call.ended`; `data` is the
    call as `GET /calls/{id}` shows it (without the timeline) right after the change.
    """

    id: int
    call_id: str
    type: str
    data: dict[str, Any]
    created_at: float
    from_status: str | None = None
    """The status before the change (None for a new call)."""


@dataclass(frozen=True)
class Applied:
    """What applying one event did, and the outbox events it wrote (in the same transaction)."""

    duplicate: bool = False
    unknown_call: bool = False
    too_many_turns: bool = False  # an agent's turn beyond the MAX_TURNS a call keeps: not kept
    change: Change | None = None
    before: CallRecord | None = None
    after: CallRecord | None = None
    events: tuple[CallEvent, ...] = ()
    released: bool = False  # deliveries held until the dial were made (of earlier events)


@dataclass(frozen=True)
class Erasure:
    """What an erasure on request did: the calls it erased (in the order they ended), or,
    when some of the calls asked for were still live, those (and nothing was erased)."""

    erased: tuple[str, ...] = ()
    live: tuple[str, ...] = ()
    # Campaign calls just ended whose campaign has not recorded their end yet (a moment):
    # nothing was erased either (see campaign_programs.erase_recipients_now).
    ending: tuple[str, ...] = ()
    erased_at: float | None = None
    # Campaign recipients erased with them (their fields; those still due ended `erased`).
    recipients: int = 0
    # What the erased calls were placed with (their configs before the erasure): to erase it
    # where else it is (config.json's top level, the seed's latest document). Never shown.
    placed_with: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # Campaigns it left with every recipient final: their campaign.completed, to dispatch.
    events: tuple[CallEvent, ...] = ()


Decide = Callable[[CallState], Change | None]


@dataclass(frozen=True)
class WebhookDelivery:
    """One customer webhook delivery: an event for one URL, its attempts so far."""

    id: int
    event_id: int
    call_id: str
    url: str
    webhook_id: str
    state: str  # pending, delivered, failed, stopped
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    created_at: float
    delivered_at: float | None
    event_type: str = ""
    event_data: dict[str, Any] = field(default_factory=dict)
    event_created_at: float = 0.0
    round_start: int = 0  # its attempts when last redelivered: the retry schedule's start


@dataclass(frozen=True)
class RecordedDelivery:
    """After an attempt was recorded: its call's next delivery to that URL, claimed for the
    sender that recorded it (due, and nobody held it), or else when that next one (or this
    one, retried) can be claimed, if nobody holds it; None: nothing of that call waits."""

    taken: WebhookDelivery | None = None
    next_at: float | None = None


# Between an attempt's error and the start of the refusing receiver's answer it quotes, in a
# delivery's `last_error`: `HTTP 400: "{\"error\": ...}"`. An erasure cuts the quote off (a
# receiver may echo the event: the callee's name, the conversation).
RECEIVER_SAID: Final = ': "'


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt came to: delivered, retry at `next_attempt_at`, failed, or stopped
    (410 Gone: no more deliveries to this URL for this call)."""

    state: str  # delivered, pending (retry), failed, stopped
    status: int | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    round_start: int | None = None  # the delivery's round it was decided in (None: any)
    # When it is due again had this attempt been the first of a round (None: a schedule of
    # one attempt): a redeliver that came while it was out made it so.
    first_retry_at: float | None = None
