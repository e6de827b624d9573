"""Campaigns as the service holds them: statuses, recipient states, the stored records, and
the pure rules of a run (what an attempt's end means for its recipient, how fast to dial).

The request shapes and their validation are in common/campaigns/request.py; the database
rows in common/storage/campaign_programs.py; the loop that places calls in scheduler.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from common.campaigns.windows import (
    END_OF_DAY,
    CallingWindow,
    after_open_time,
    call_zones,
)
from common.times import iso_time


class CampaignStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for start_at
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"  # every recipient reached a final state
    CANCELED = "canceled"


ACTIVE_STATUSES = frozenset({CampaignStatus.SCHEDULED, CampaignStatus.RUNNING})
OVER_STATUSES = frozenset({CampaignStatus.COMPLETED, CampaignStatus.CANCELED})

# A recipient waits (pending: due at next_at; waiting_window: next_at is when its calling
# window opens), is being called (calling), or ended in a final state: its last call's
# status, dnc (on the do-not-call list when its turn came), invalid (refused at creation with
# invalid_rows=skip, or when placed), canceled (the campaign was canceled first), or erased
# (its personal data erased on request while it waited: POST /calls/erase; never called).
PENDING, WAITING_WINDOW, CALLING = "pending", "waiting_window", "calling"
OPEN_STATES = (PENDING, WAITING_WINDOW, CALLING)
DUE_STATES = (PENDING, WAITING_WINDOW)
CALL_OUTCOMES = ("completed", "busy", "no_answer", "voicemail", "failed", "canceled")
DNC, INVALID, CANCELED, ERASED = "dnc", "invalid", "canceled", "erased"
RECIPIENT_STATES = (
    PENDING,
    WAITING_WINDOW,
    CALLING,
    *CALL_OUTCOMES[:-1],
    DNC,
    INVALID,
    CANCELED,
    ERASED,
)
RETRYABLE = ("busy", "no_answer", "voicemail", "failed")

CAMPAIGN_STARTED = "campaign.started"
CAMPAIGN_PAUSED = "campaign.paused"
CAMPAIGN_RESUMED = "campaign.resumed"
CAMPAIGN_CANCELED = "campaign.canceled"
CAMPAIGN_COMPLETED = "campaign.completed"
CAMPAIGN_EVENTS = (
    CAMPAIGN_STARTED,
    CAMPAIGN_PAUSED,
    CAMPAIGN_RESUMED,
    CAMPAIGN_CANCELED,
    CAMPAIGN_COMPLETED,
)


@dataclass(frozen=True)
class Pacing:
    calls_per_second: float = 1.0
    max_concurrent: int = 10

    @property
    def interval_s(self) -> float:
        return 1.0 / self.calls_per_second


@dataclass(frozen=True)
class RetryPolicy:
    on: tuple[str, ...] = ("busy", "no_answer")
    max_attempts: int = 3
    delay_s: float = 600.0


@dataclass(frozen=True)
class CampaignSpec:
    """How a campaign calls: the call fields every row starts from, pacing, window, retries."""

    defaults: dict[str, Any]
    pacing: Pacing
    window: CallingWindow
    retry: RetryPolicy

    def to_json(self) -> dict[str, Any]:
        w = self.window
        return {
            "defaults": self.defaults,
            "pacing": {
                "calls_per_second": self.pacing.calls_per_second,
                "max_concurrent": self.pacing.max_concurrent,
            },
            "window": {
                "start": w.start.strftime("%H:%M"),
                "end": "24:00" if w.end == END_OF_DAY else w.end.strftime("%H:%M"),
                "days": [DAY_NAMES[d] for d in sorted(w.days)],
                "timezone": w.timezone,
            },
            "retry": {
                "on": list(self.retry.on),
                "max_attempts": self.retry.max_attempts,
                "delay_s": self.retry.delay_s,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CampaignSpec:
        from common.campaigns.windows import parse_window

        pacing, retry = data["pacing"], data["retry"]
        return cls(
            defaults=data["defaults"],
            pacing=Pacing(float(pacing["calls_per_second"]), int(pacing["max_concurrent"])),
            window=parse_window(data["window"]),
            retry=RetryPolicy(
                tuple(retry["on"]), int(retry["max_attempts"]), float(retry["delay_s"])
            ),
        )


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class NewRecipient:
    idx: int
    row_number: int  # the row as the user numbers it: spreadsheet row, or list index
    phone_number: str  # E.164, or (an invalid row) the text given, made storable and clipped
    fields: dict[str, Any]  # the row's own call fields (merged over the defaults when placed)
    state: str = PENDING
    errors: list[dict[str, Any]] | None = None
    next_at: float | None = None  # when it is first due (None: at the campaign's start)


@dataclass(frozen=True)
class NewCampaign:
    campaign_id: str
    name: str
    client: str
    spec: CampaignSpec
    start_at: float
    webhook_url: str | None
    recipients: list[NewRecipient]


class UnreadableSpec(ValueError):
    """A campaign's stored spec no longer reads, where it had to (a driver's)."""


@dataclass(frozen=True)
class CampaignRecord:
    campaign_id: str
    name: str
    client: str
    status: CampaignStatus
    # None: its stored spec no longer reads (`unreadable` says why): a key a newer release
    # added, a hand edit. Shown with the rest of its row; never driven (`spec`).
    stored_spec: CampaignSpec | None
    webhook_url: str | None
    total: int
    start_at: float
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    next_dial_at: float
    placed: int
    first_dial_at: float | None
    last_dial_at: float | None
    counts: dict[str, int] = field(default_factory=dict)
    next_due_at: float | None = None
    next_due_number: str | None = None  # the next recipient due's (its zones for the window)
    next_due_params: object = None  # and its additional_params (its own time zone)
    unreadable: str | None = None  # why stored_spec is None ("campaigns.spec: KeyError: ...")

    @property
    def spec(self) -> CampaignSpec:
        """Its spec, as its driver reads it: the scheduler claims only campaigns whose spec
        reads (UnreadableSpec else: a defect)."""
        if self.stored_spec is None:
            raise UnreadableSpec(f"campaign {self.campaign_id}: {self.unreadable}")
        return self.stored_spec

    @property
    def achieved_calls_per_second(self) -> float | None:
        """Attempts placed per second, from the first dial to the last (None before two)."""
        if self.placed < 2 or self.first_dial_at is None or self.last_dial_at is None:
            return None
        span = self.last_dial_at - self.first_dial_at
        return round((self.placed - 1) / span, 3) if span > 0 else None

    def next_call_at(self, now: float) -> float | None:
        """When the next call may go out: pacing, start_at and the earliest due recipient."""
        if self.status not in ACTIVE_STATUSES or self.next_due_at is None:
            return None
        if self.stored_spec is None:  # not driven: no call goes out while it does not read
            return None
        # A running one's start_at is past (ahead only of a clock stepped back since)
        start = self.start_at if self.status is CampaignStatus.SCHEDULED else now
        return max(self.next_dial_at, start, self.next_due_at, now)

    def estimated_finish_at(self, now: float, enforce_calling_hours: bool = True) -> float | None:
        """An estimate: the recipients still waiting, one attempt each at the campaign's
        pace from the next call on, counting only the time its window (and, enforced, the
        calling-hours floor) is open, read in the next recipient due's time zones (retries
        make it later; recipients in other zones later or earlier)."""
        if self.status in OVER_STATUSES:
            return self.ended_at
        waiting = sum(self.counts.get(s, 0) for s in DUE_STATES)
        start = self.next_call_at(now)
        if start is None:
            return None
        return estimated_finish(
            start,
            waiting,
            self.spec.pacing.interval_s,  # (read: next_call_at is None otherwise)
            self.spec.window,
            call_zones(
                self.next_due_number,
                self.next_due_params,
                self.spec.defaults.get("additional_params"),
            )
            if self.next_due_number
            else (),
            enforce_calling_hours=enforce_calling_hours,
        )

    def to_json(self, now: float, enforce_calling_hours: bool = True) -> dict[str, Any]:
        """As the API shows it; `enforce_calling_hours` as CAMPAIGN_ENFORCE_CALLING_HOURS.
        One whose spec no longer reads is shown with the rest of its row, its spec's parts
        null and `unreadable` saying why (raised, it failed GET /campaigns whole, its own
        page, and its pause, resume and cancel: 500)."""
        counts = {state: self.counts.get(state, 0) for state in RECIPIENT_STATES}
        if self.stored_spec is not None:
            spec: dict[str, Any] = self.stored_spec.to_json()
        else:
            spec = {
                **dict.fromkeys(("defaults", "pacing", "window", "retry")),
                "unreadable": self.unreadable,
            }
        return {
            "campaign_id": self.campaign_id,
            "name": self.name,
            "status": self.status.value,
            "total": self.total,
            "counts": counts,
            "attempts": self.placed,
            "created_at": iso_time(self.created_at),
            "start_at": iso_time(self.start_at),
            "started_at": iso_time(self.started_at),
            "ended_at": iso_time(self.ended_at),
            "achieved_calls_per_second": self.achieved_calls_per_second,
            "next_call_at": iso_time(self.next_call_at(now)),
            "estimated_finish_at": iso_time(self.estimated_finish_at(now, enforce_calling_hours)),
            **spec,
        }


@dataclass(frozen=True)
class Attempt:
    attempt: int
    state: str  # placing, placed, ended
    call_id: str | None
    status: str | None
    created_at: float
    ended_at: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "call_id": self.call_id,
            "status": self.status,
            "placed_at": iso_time(self.created_at),
            "ended_at": iso_time(self.ended_at),
        }


@dataclass(frozen=True)
class RecipientRecord:
    idx: int
    row_number: int
    phone_number: str
    fields: dict[str, Any]
    state: str
    attempts: int
    next_at: float
    last_call_id: str | None
    errors: list[dict[str, Any]] | None
    history: tuple[Attempt, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.idx,
            "row": self.row_number,
            "phone_number": self.phone_number,
            "state": self.state,
            "attempts": [a.to_json() for a in self.history],
            "next_attempt_at": iso_time(self.next_at) if self.state in DUE_STATES else None,
            "errors": self.errors or [],
        }


@dataclass(frozen=True)
class AttemptPlan:
    """An attempt the scheduler may place now: the recipient, and its attempt number."""

    campaign_id: str
    idx: int
    attempt: int
    phone_number: str
    fields: dict[str, Any]


def estimated_finish(
    start: float,
    calls: int,
    interval_s: float,
    window: CallingWindow,
    zones: Sequence[str],
    *,
    enforce_calling_hours: bool,
) -> float:
    """When the last of `calls` calls goes out, one every `interval_s` from `start`, placed
    only while `window` is open (in `zones` when it is the recipients' own) and, with
    `enforce_calling_hours`, while it is 08:00-21:00 in `zones`: a campaign that calls 9-17
    finishes in those hours, not at night, and one calling 07-22 within 08-21. At the pace
    alone when the window is never open in `zones` (none known)."""
    busy_s = max(0, calls - 1) * interval_s
    at = after_open_time(
        datetime.fromtimestamp(start, UTC),
        busy_s,
        window,
        zones,
        enforce_calling_hours=enforce_calling_hours,
    )
    return start + busy_s if at is None else at.timestamp()


def after_attempt(
    status: str, attempts: int, retry: RetryPolicy, ended_at: float, *, campaign_over: bool
) -> tuple[str, float | None]:
    """A recipient's state once its attempt ended with `status`: pending again at the
    returned time (a retry), or final."""
    if not campaign_over and status in retry.on and attempts < retry.max_attempts:
        return PENDING, ended_at + retry.delay_s
    return status, None


def ceil_s(value: float) -> int:
    """Whole seconds, at least one (a Retry-After)."""
    return max(1, math.ceil(value))
