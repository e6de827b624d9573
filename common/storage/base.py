"""The storage seam: `CallStore` is the only way to the database.

Nothing outside `common/storage/` imports a database driver or writes SQL. Backends (SQLite,
PostgreSQL) implement this protocol; one contract suite (tests/contract/) runs against each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from common.calls.models import (
    Applied,
    AttemptRef,
    CallEvent,
    CallRecord,
    Decide,
    DeliveryOutcome,
    DncEntry,
    Erasure,
    IdempotencyClaim,
    LostCall,
    NewCall,
    RecordedDelivery,
    StoredAnswer,
    WebhookDelivery,
)
from common.calls.outcomes import Status
from common.contracts import AgentReport
from common.storage.paging import Before

if TYPE_CHECKING:
    from common.campaigns.model import (
        AttemptPlan,
        CampaignRecord,
        NewCampaign,
        RecipientRecord,
    )
    from common.storage.campaign_programs import DueRecipients, OnList


# Given the ids of calls about to be erased on request and what they were placed with (their
# configs), before their erasure is written (CallStore.erase_calls_now).
BeforeErasing = Callable[[Sequence[str], Sequence[dict[str, Any]]], Awaitable[None]]


class DatabaseError(Exception):
    """The database could not do what was asked; callers answer 503 (and retry later)."""


class DatabaseGone(DatabaseError):
    """The database file was removed or replaced under the running server: nothing more is
    written to it until a restart (no retry of a request can succeed)."""


class DatabaseLocked(DatabaseError):
    """Another process (a shell's open transaction, a backup tool) holds the database's write
    lock: writes are refused at once until it lets go (a retry later may succeed)."""


class DatabaseAccessDenied(DatabaseError):
    """The database's files, or the directory they are made in, are not this process's to
    write (another user's, a read-only file system): the message says which, and what to do.
    A restart as their owner, or a chown, helps; another file is a new, empty database."""


class DatabaseStalled(DatabaseError):
    """The request waited on the database too long: what runs before it has not finished
    (a disk that stalls, a very long transaction), and it was not run at all; or it is what
    runs, and has not returned (it may still be written once the disk lets it)."""


class DatabaseNewer(DatabaseError):
    """The database was migrated by a newer release than this code (a rollback)."""


class ErasureUnfinished(DatabaseError):
    """An erasure on request stopped by the database (`cause`) after it had erased part of
    what it covers (`done`: its campaign recipients, some of its `calls` calls): erased calls
    stay erased, and the same request again erases the rest."""

    def __init__(self, cause: DatabaseError, done: Erasure, calls: int, unknown: int = 0) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.done = done
        self.calls = calls
        # Calls of the batch whose commit's answer was lost (CommitUnknown): perhaps erased
        # (counted in `done.erased`, whose configs and config.json copies go as theirs).
        self.unknown = unknown


class ErasureHeldUp(DatabaseError):
    """What calls about to be erased on request were placed with could not first be removed
    from where else it is (config.json's top level and records, its copies set aside, an
    unreadable config.json): their erasure is not written, so that the same request again
    still finds it there (once written, the database no longer holds the name and
    instructions to look for)."""


class CommitUnknown(DatabaseError):
    """The connection broke while a transaction committed: it may or may not be written."""


@dataclass(frozen=True)
class AdmissionLimits:
    """What a new call must fit in, checked in the transaction that records it.

    Held in the database, not in a process, so they hold across every server on one database.
    """

    max_live: int
    per_minute: int


@dataclass(frozen=True)
class Placer:
    """A server placing calls (Settings.instance_name), its run (drawn at each start), and
    when that run started: what never_dialled settles at once is what this server's earlier
    run recorded before this run began. Later calls with its name and another run are a
    second server by the same name (containers given one `hostname`): they are its to dial."""

    server: str
    run: str
    started_at: float


@dataclass(frozen=True)
class Refusal:
    """A call the limits refused: which limit, and when trying again may work."""

    limit: str  # "live", "rate", or "dnc" (the number is on the do-not-call list)
    retry_after_s: int


class Refused(Exception):
    """`create_call` recorded nothing: a limit of `AdmissionLimits` was reached."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.limit)
        self.refusal = refusal


class AttemptWithdrawn(Exception):
    """`create_call` recorded nothing: the campaign attempt it was for is no longer being
    placed (its campaign was paused or canceled meanwhile)."""


class WindowClosed(AttemptWithdrawn):
    """`start_dial` did not mark the dial: the campaign call's calling window closed while
    it was being placed (its config write, its agent's dispatch: seconds)."""


class UploadGivenUp(DatabaseError):
    """A campaign's recipients were being stored when its upload was taken for given up
    (not touched for UPLOAD_GIVEN_UP_S: a database that slow answers 503 anyway)."""


class CallIdTaken(DatabaseError):
    """`create_call` recorded nothing: a call of that id is there already (an earlier call's,
    whose row is kept for its history: ids are random, and one is drawn again at times)."""


class KeyTaken(Exception):
    """`create_call` recorded nothing: the Idempotency-Key is bound to a call already."""

    def __init__(self, stored: StoredAnswer) -> None:
        super().__init__(stored.call_id)
        self.stored = stored


class CampaignStore(Protocol):
    """Campaigns (their scheduler state: claims, recipients, attempts) and the do-not-call
    list; see common/storage/campaign_programs.py for what each does."""

    async def create_campaign(
        self,
        campaign: NewCampaign,
        now: float | None = None,
        claim: IdempotencyClaim | None = None,
        answer: dict[str, Any] | None = None,
        *,
        start_now: bool = False,
    ) -> list[CallEvent]:
        """The campaign and its recipients, with `claim`'s key bound to it and `answer` kept
        for its retries (KeyTaken if the key is bound already: nothing is written). The
        recipients are stored a batch a transaction, under a campaign no one sees until its
        own transaction; if one fails, what was stored is the reaper's to remove.
        `start_now`: it is created `running`, its campaign.started event returned (to be
        published: it is committed)."""
        ...

    async def discard_given_up_upload(self, before: float, limit: int) -> int:
        """Up to `limit` recipients of a campaign upload that failed or was not touched
        since `before`, and its mark once none is left: the rows removed."""
        ...

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None: ...

    async def campaign_exists(self, campaign_id: str) -> bool:
        """Whether the campaign is there, by its row alone (get_campaign counts every
        recipient by state: 40 ms for 100,000)."""
        ...

    async def list_campaigns(
        self, *, limit: int = 50, before: Before | None = None
    ) -> list[CampaignRecord]: ...

    async def claim_campaigns(
        self, now: float, lease_s: float, limit: int
    ) -> tuple[list[CampaignRecord], list[CallEvent]]: ...

    async def release_campaigns(self) -> None: ...

    async def follow_default_webhook_url(self, url: str) -> int:
        """Campaigns not over, with no webhook_url in their defaults, send their events to
        `url` (CALLS_WEBHOOK_URL now) from now on, as their calls do; how many were moved."""
        ...

    async def control_campaign(
        self, campaign_id: str, action: str, now: float | None = None
    ) -> tuple[CampaignRecord | None, list[CallEvent]]: ...

    async def complete_if_done(self, campaign_id: str, now: float) -> list[CallEvent]: ...

    async def pull_back_after_step(self, campaign_id: str, now: float) -> int:
        """Recipients whose wait (a retry's, a refusal's) was counted from a clock since
        stepped back wait it from `now` instead; how many."""
        ...

    async def due_recipients(self, campaign_id: str, now: float, limit: int) -> DueRecipients:
        """The first `limit` recipients due, those that read and those that do not."""
        ...

    async def set_aside_recipients(self, campaign_id: str, idxs: Sequence[int], now: float) -> int:
        """Due recipients whose rows do not read wait UNREADABLE_RETRY_S; how many."""
        ...

    async def next_due_at(self, campaign_id: str) -> float | None:
        """When the campaign's next recipient falls due (None: none waits to be called)."""
        ...

    async def defer_recipient(
        self,
        campaign_id: str,
        idx: int,
        state: str,
        until: float,
        now: float,
        errors: list[dict[str, Any]] | None = None,
    ) -> None: ...

    async def list_recipients(
        self, campaign_id: str, *, state: str | None, limit: int, after: int | None
    ) -> list[RecipientRecord]: ...

    async def begin_attempt(
        self, campaign_id: str, idx: int, next_dial_at: float, now: float
    ) -> AttemptPlan | OnList | None: ...

    async def open_attempts(self, campaign_id: str) -> tuple[int, list[AttemptRef]]: ...

    async def attempt_refused(
        self, ref: AttemptRef, retry_at: float | None, now: float
    ) -> None: ...

    async def end_attempt(
        self,
        ref: AttemptRef,
        status: str,
        now: float,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> list[CallEvent]: ...

    async def finish_call_attempt(
        self, call_id: str, status: str, now: float, *, enforce_hours: bool = True
    ) -> list[CallEvent]: ...

    async def add_dnc(self, numbers: list[str], source: str, call_id: str | None = None) -> int: ...

    async def remove_dnc(self, number: str) -> bool: ...

    async def get_dnc(self, number: str) -> DncEntry | None: ...

    async def list_dnc(self, *, limit: int = 100, after: str | None = None) -> list[DncEntry]: ...


class EventLog(Protocol):
    """The outbox operations the event dispatcher needs (a CallStore has them)."""

    async def ack_events(self, event_ids: list[int], now: float) -> None: ...

    async def claim_stale_events(
        self,
        now: float,
        lease_s: float,
        limit: int,
        *,
        take_own: bool = False,
        held: Sequence[int] = (),
    ) -> list[CallEvent]:
        """Undispatched events of dead servers (lease over); with `take_own`, as this server
        starts, also those it held itself before a restart. The claims of `held` (events this
        server's dispatcher still has to give or mark) are renewed first, not taken over."""
        ...


class CallStore(CampaignStore, EventLog, Protocol):
    """Calls, their timelines, idempotency keys, the admission limits and the event outbox."""

    # True once no write can succeed until the server is restarted (DatabaseGone).
    restart_needed: bool

    async def close(self) -> None: ...

    def stop_by(self, deadline: float) -> None: ...

    def stall_causes(self, *, public: bool) -> str:
        """Why a write may not finish in time, and what to look at (the readiness probe's
        words); `public`: for an answer without a token, naming no host."""
        ...

    # -- calls ---------------------------------------------------------------------------

    async def create_call(
        self,
        call: NewCall,
        detail: dict[str, object] | None = None,
        *,
        claim: IdempotencyClaim | None = None,
        limits: AdmissionLimits | None = None,
        now: float | None = None,
    ) -> Applied:
        """Record a new call (status dialing) with its `call.dialing` event, in one
        transaction with its Idempotency-Key; raise KeyTaken or Refused (nothing recorded)."""
        ...

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None: ...

    async def list_calls(
        self, *, status: Status | None = None, limit: int = 50, before: Before | None = None
    ) -> list[CallRecord]:
        """Newest first, without each call's config and final report (None: lists show
        neither)."""
        ...

    async def placed_between(
        self, instance: str, start: float, end: float, limit: int
    ) -> list[CallRecord]:
        """The calls `instance` placed (any run of it) created from `start` to `end`, oldest
        first, at most `limit`, with their configs."""
        ...

    async def count_live(self) -> int: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def apply(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, object] | None = None,
        room_finished: bool = False,
        callee_left: bool = False,
        only_if_changed: bool = False,
        ended_at: float | None = None,
        event_at: float | None = None,
        dial_taken: bool = False,
        release_refused: bool = False,
    ) -> Applied:
        """In one transaction: dedupe by event id, decide the change, store it, its timeline
        entry and its outbox events. `room_finished` / `callee_left`: the event says the room
        / the callee's leg is gone (kept as a time, the first one). `only_if_changed`: no
        timeline entry when the decision changes nothing (a request that lost a race).
        `ended_at`: when a final decision's call ended, if known to be before now.
        `event_at`: when the event happened by its sender (a late webhook's createdAt).
        `dial_taken`: LiveKit took the call's dial: the customer deliveries a call placed through
        the API held until then are made (Applied.released). `release_refused`: a decision
        that fails a call never dialled frees its Idempotency-Key and rate share with it."""
        ...

    async def start_dial(
        self, call_id: str, window_open: Callable[[], bool] | None = None
    ) -> CallRecord | None:
        """Mark the dial as started (see programs.start_dial). `window_open`: for a campaign
        call, whether its recipient's calling window is open now (by the campaign's clock),
        asked in the same transaction; WindowClosed, unmarked, if it is not."""
        ...

    async def request_hangup(self, call_id: str, unanswered: bool = False) -> CallRecord | None:
        """Mark the call to be hung up; None if unknown; unmarked (hangup_requested False) if
        it is ending already: its callee left, or its room finished; or, `unanswered`, if
        it was answered."""
        ...

    async def release_placement(self, call_id: str) -> None:
        """The call was never dialled: it stops counting against the rate, and the
        Idempotency-Key bound to it (if any) is freed so a retry may place it anew."""
        ...

    async def unmark_dial(self, call_id: str) -> None:
        """LiveKit refused the dial before making it (no SIP status, no doubt it was not
        carried out): the call's dial no longer counts as started."""
        ...

    async def settle_never_dialled(self, call_id: str, decide: Decide) -> Applied:
        """The reaper's `apply` (kind `reaped`, only if it changes the call) of a call found
        never dialled, and, when it settled it, `release_placement`, in one transaction. A
        server that marked the dial meanwhile (stalled past the bound, then going on) keeps
        its call and key: `decide` sees the dial."""
        ...

    async def record_reports(
        self, reports: Sequence[AgentReport], behind: float = 0.0
    ) -> list[Applied]:
        """Store an agent's reports about one call, each once, and apply what they say, in
        order, in one transaction (see programs.record_reports); `behind`: how far the
        agent's clock is behind this server's, by its token (its reports' `at` read so)."""
        ...

    async def erase_call_data(self, ended_before: float, limit: int) -> int:
        """Erase the conversations of at most `limit` calls that ended before `ended_before`
        (the oldest first), in one transaction; how many."""
        ...

    async def erase_calls_now(
        self,
        *,
        call_id: str | None = None,
        numbers: Sequence[str] = (),
        before_erasing: BeforeErasing | None = None,
    ) -> Erasure:
        """Erase now, on request, the personal data of one call or of every call to one of
        `numbers`, in one transaction; nothing while one of them is live (see
        programs.erase_calls_now). `before_erasing` is given each batch's call ids and what
        they were placed with (their configs) before that batch's erasure is written: once it
        is, what they were placed with is gone from the database, and a failure or a crash
        before the caller erased it elsewhere (config.json: its top level, its copies) left
        it there for good. What it raises (a DatabaseError) stops the erasure there."""
        ...

    # -- customer webhooks ---------------------------------------------------------------

    async def claim_due_deliveries(
        self, now: float, lease_s: float, limit: int
    ) -> list[WebhookDelivery]: ...

    async def record_delivery(
        self, delivery_id: int, outcome: DeliveryOutcome, take_next_for_s: float | None = None
    ) -> RecordedDelivery:
        """Record an attempt; with `take_next_for_s`, also claim (for that lease) its call's
        next delivery to that URL if it is due and nobody holds it (see RecordedDelivery)."""
        ...

    async def release_claims(self) -> int:
        """After a restart: give back the deliveries this server (its instance) held."""
        ...

    async def free_behind(self) -> int:
        """Pending deliveries marked behind an earlier one that is over, claimable again
        (a server of an earlier release recorded that one); how many."""
        ...

    async def pull_back_deliveries(self, now: float, step_s: float) -> int:
        """The server's clock stepped back `step_s`: pending deliveries due after `now`, and
        this server's claims, wait that much less (never past `now`); how many deliveries."""
        ...

    async def defer_deliveries(self, delivery_ids: list[int], until: float) -> None: ...

    async def renew_delivery_claim(self, delivery_id: int, lease_s: float) -> bool:
        """Hold the delivery `lease_s` more, if this server's claim of it is still the last
        one and it is still pending; False if another server claimed it since (its send
        must not be made here) or it is done."""
        ...

    async def next_delivery_at(self, unclaimed_at: float | None = None) -> float | None: ...

    async def list_deliveries(
        self, call_id: str, limit: int | None = None, after: int = 0
    ) -> list[WebhookDelivery]:
        """Every delivery of `call_id`; with `limit`, a page of them (programs.py)."""
        ...

    async def count_pending_deliveries(self) -> int:
        """Customer webhook deliveries not yet delivered nor given up."""
        ...

    async def count_given_up_events(self) -> int:
        """Outbox events given up, undispatched, after too many take-overs."""
        ...

    async def get_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        """The delivery of this id, or None if there is none (nothing is changed)."""
        ...

    async def redeliver(self, delivery_id: int) -> WebhookDelivery | None: ...

    # -- the reaper ----------------------------------------------------------------------

    async def stale_live_calls(
        self,
        now: float,
        margin_s: float,
        stretch: float = 1.0,
        finished_before: float = 0.0,
        steps: Sequence[tuple[float, float]] = (),
    ) -> list[LostCall]:
        """Live calls older than `stretch` times their ringing timeout and longest duration,
        plus `margin_s`, whose room never said it finished, or said so before
        `finished_before`; each with when the server last heard of it. `steps`: (when, how
        many seconds it and the later ones gained) the server's clock stepped forward, oldest
        first: calls created before one are that much younger."""
        ...

    async def graceless_finished(
        self, finished_before: float, late_finished_before: float | None = None
    ) -> list[str]: ...

    async def never_dialled(
        self,
        created_before: float,
        steps: Sequence[tuple[float, float]] = (),
        placer: Placer | None = None,
    ) -> list[str]:
        """Live calls never dialled, recorded before `created_before` (`steps` as
        stale_live_calls reads them: a call recorded before a step of the clock is that much
        younger) or (`placer`) placed by that server in another run before this one began."""
        ...

    async def unfinished_rooms(
        self, dialled_before: float, sandbox_instance: str | None = None
    ) -> list[LostCall]:
        """Live calls dialled before `dialled_before` whose room never said it finished: in
        `sandbox_instance`'s embedded sandbox, or (None) on a real LiveKit; with when the
        server last heard of each."""
        ...

    async def unreported_dialled(
        self, dialled_before: float, sandbox_instance: str | None = None
    ) -> list[str]:
        """Live calls dialled before `dialled_before` that no agent has reported on, their
        line and room not known to have ended: in `sandbox_instance`'s embedded sandbox, or
        (None) on a real LiveKit."""
        ...

    async def agent_seen(self, call_id: str) -> bool:
        """Whether an agent showed itself in the call: a report of it, or a timeline
        `participant_joined` marked `agent_joined` (or `participant_left`, `agent_left` or
        `agent_in_call`)."""
        ...

    async def agent_gone_unsettled(
        self, left_before: float, sandbox_instance: str | None = None
    ) -> list[str]:
        """Live calls whose agent left their room (a timeline `participant_left` marked
        `agent_left`) before `left_before`, their line and room not known to have ended: in
        `sandbox_instance`'s embedded sandbox, or (None) on a real LiveKit."""
        ...

    async def sandbox_owners(self, created_before: float) -> list[str]:
        """The servers (Settings.sandbox_owner) whose embedded sandbox holds a live call
        created before `created_before` whose room never reported finishing."""
        ...

    async def lost_sandbox_calls(
        self, instance: str | None, created_before: float
    ) -> list[LostCall]:
        """Live calls placed into `instance`'s embedded sandbox before `created_before` (an
        earlier run of that server: their rooms went with it) whose rooms never reported
        finishing, oldest first."""
        ...

    async def live_among(self, call_ids: list[str]) -> set[str]: ...

    async def unanswered_calls_to(self, numbers: list[str]) -> list[str]:
        """The calls to `numbers` dialled and still dialling or ringing, oldest first."""
        ...

    async def known_among(self, call_ids: list[str]) -> set[str]: ...

    async def erased_among(self, call_ids: list[str]) -> set[str]:
        """Which of `call_ids` had their personal data erased on request."""
        ...

    async def probe_write(self, instance: str) -> None: ...

    # -- idempotency ---------------------------------------------------------------------

    async def get_idempotent(self, client: str, key: str) -> StoredAnswer | None: ...

    async def answer_idempotent(
        self, client: str, key: str, bound_to: str, status: int, body: dict[str, object]
    ) -> None:
        """Store the answer given under the key, if the key is still bound to `bound_to`."""
        ...

    # -- admission -----------------------------------------------------------------------

    async def admission_refusal(
        self, client: str, limits: AdmissionLimits, now: float, number: str | None = None
    ) -> Refusal | None:
        """What `create_call` would refuse right now (a cheap check before writing config);
        with `number`, its do-not-call entry too."""
        ...

    async def purge_rate_buckets(self, now: float) -> int:
        """Drop the per-second rate counts that no longer count at `now` (the reaper)."""
        ...

    # -- the outbox (its ack and take-over: EventLog's, above) ---------------------------

    async def purge_dispatched_events(self, before: float, limit: int | None = None) -> int: ...


# Set while a request asks for a call not placed yet (its admission and its row): a store with
# few connections (PostgreSQL's pool) keeps some of them for the calls already placed, whose
# next step (marking the dial, recording it) must not queue behind a burst of new requests.
ASKING_FOR_A_NEW_CALL: ContextVar[bool] = ContextVar("asking_for_a_new_call", default=False)


@contextlib.contextmanager
def asking_for_a_new_call() -> Iterator[None]:
    """The store calls made inside are a new call's admission (see ASKING_FOR_A_NEW_CALL)."""
    token = ASKING_FOR_A_NEW_CALL.set(True)
    try:
        yield
    finally:
        ASKING_FOR_A_NEW_CALL.reset(token)
