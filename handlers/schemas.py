"""The bodies of the HTTP answers that are not calls themselves (calls: common/calls/views.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

from common.calls.models import WebhookDelivery
from common.calls.outcomes import Status
from common.calls.phone import PHONE_SYNTAX
from common.calls.views import CallSummary, Timestamp
from common.times import iso_time


class ErrorBody(BaseModel):
    status: Literal["error"] = "error"
    error: str
    details: list[dict[str, Any]] = Field(
        default_factory=list, description="Field-by-field problems, or failing components"
    )
    call_id: str | None = Field(
        default=None,
        description="POST /calls/outbound's 502, 503 or 504 of a dial that may have rung: the"
        " call, recorded as failed (or busy, no_answer: a SIP status of its dial), whose"
        " events are sent",
    )


class CallPlaced(BaseModel):
    status: Literal["success"] = "success"
    call_id: str
    room: str = Field(description="The LiveKit room: the call id")
    call_status: Status


class CallList(BaseModel):
    calls: list[CallSummary]
    next_before: str | None = Field(
        description="Pass as before= for the next page (`<created_at>:<call_id>`); null on the"
        " last page"
    )


class HangupAnswer(BaseModel):
    status: Literal["success"] = "success"
    call_id: str
    call_status: Status


class EraseNumberBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as erase_number refuses unknown fields

    phone_number: str = Field(
        description="E.164 (in the body, not the URL: a number in a URL reaches access logs)",
        json_schema_extra={"pattern": PHONE_SYNTAX},  # as e164 reads it (the do-not-call's)
    )


class Erased(BaseModel):
    status: Literal["success"] = "success"
    erased: int = Field(description="How many calls had their personal data erased")
    call_ids: list[str] = Field(description="Those calls, in the order they ended")
    recipients_erased: int = Field(
        description="How many campaign recipients had their row's fields erased (those still"
        " waiting to be called end `erased`, never called)"
    )
    personal_data_erased_at: Timestamp | None = Field(
        description="When (as each call's `personal_data_erased_at` now says); null if"
        " nothing was erased"
    )


class Ok(BaseModel):
    status: Literal["ok"] = "ok"


class Degraded(BaseModel):
    component: Literal["livekit"]
    error: str = Field(description="What it answered")


class Ready(BaseModel):
    status: Literal["ok"] = "ok"
    degraded: list[Degraded] = Field(
        default_factory=list,
        description="Present only when a component answers but will not serve now: LiveKit"
        " over a limit of its own (HTTP 429, `resource_exhausted`). Calls placed meanwhile"
        " are answered 503 with `Retry-After`; everything else is served",
    )


class ReportAnswer(BaseModel):
    status: Literal["success"] = "success"
    result: Literal["applied", "duplicate"]


class ReportResult(BaseModel):
    seq: int
    result: Literal["applied", "duplicate", "too_many_turns"]
    error: str | None = Field(default=None, description="Why a report was not kept")


class ReportsAnswer(BaseModel):
    """The answer to several reports in one POST: what became of each, in order. A turn
    beyond the transcript turns a call keeps is `too_many_turns` (not kept); the others
    count."""

    status: Literal["success"] = "success"
    results: list[ReportResult]


class WebhookAnswer(BaseModel):
    status: Literal["success"] = "success"
    result: Literal["applied", "duplicate", "ignored"]


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document (this service's own)."""

    model_config = ConfigDict(extra="allow")

    openapi: str


class DeliveryView(BaseModel):
    """A customer webhook delivery: one event for one URL."""

    id: int
    event: str = Field(description="call.dialing, call.ringing, call.answered, call.ended, ...")
    webhook_id: str = Field(description="The webhook-id header: the same on every attempt")
    url_host: str
    state: Literal["pending", "delivered", "failed", "stopped"]
    attempts: int
    last_status: int | None = Field(description="The receiver's last HTTP status, if any")
    last_error: str | None = Field(
        description="Why the last attempt failed; a refusal quotes the start of the receiver's"
        " answer"
    )
    next_attempt_at: Timestamp | None = Field(
        description="When it is tried again (pending); behind an earlier delivery"
        " (`waiting_for`), not before that one's"
    )
    waiting_for: int | None = Field(
        description="The earlier pending delivery of the same call to the same URL that this"
        " one waits for: a call's events reach a URL in order"
    )
    delivered_at: Timestamp | None = Field(
        description="When it was delivered (none while pending: a redelivered one has none"
        " until it is delivered again)"
    )
    created_at: Timestamp

    @classmethod
    def list_of(cls, deliveries: Sequence[WebhookDelivery]) -> list[DeliveryView]:
        """One call's (or campaign's) deliveries as shown, in id order: a pending one behind
        an earlier pending one to its URL says which, and goes no sooner than that one (it
        showed its own time, long past while it waited, as if overdue)."""
        first_pending: dict[str, WebhookDelivery] = {}
        views = []
        for delivery in sorted(deliveries, key=lambda d: d.id):
            ahead = None
            if delivery.state == "pending":
                ahead = first_pending.setdefault(delivery.url, delivery)
            views.append(cls.of(delivery, None if ahead is delivery else ahead))
        return views

    @classmethod
    def of(cls, delivery: WebhookDelivery, ahead: WebhookDelivery | None = None) -> DeliveryView:
        """`ahead`: the earlier pending delivery it waits for, if any."""
        next_attempt = delivery.next_attempt_at
        if ahead is not None:
            next_attempt = max(next_attempt, ahead.next_attempt_at)
        return cls(
            id=delivery.id,
            event=delivery.event_type,
            webhook_id=delivery.webhook_id,
            url_host=URL(delivery.url).host or "",
            state=delivery.state,  # type: ignore[arg-type]
            attempts=delivery.attempts,
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            next_attempt_at=iso_time(next_attempt) if delivery.state == "pending" else None,
            waiting_for=None if ahead is None else ahead.id,
            delivered_at=iso_time(delivery.delivered_at),
            created_at=iso_time(delivery.created_at) or "",
        )


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


class DeliveryPage(BaseModel):
    """A page of a campaign's deliveries (pause and resume add two each time: no bound)."""

    deliveries: list[DeliveryView]
    next_after: int | None = Field(description="Pass as after= for the next page (none: last)")


class RedeliverAnswer(BaseModel):
    status: Literal["success"] = "success"
    delivery: DeliveryView
