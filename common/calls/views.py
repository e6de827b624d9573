"""How a call is shown: `GET /calls/{id}`, `GET /calls`, and the data of every call event.

These models are the one place the fields of those answers are written: the answers are
dumped from them and the OpenAPI document is generated from them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.calls.outcomes import Status
from common.contracts import AmdCategory, EndedBy, SuccessVerdict, TranscriptTurn
from common.times import iso_time

if TYPE_CHECKING:
    from common.calls.models import CallRecord, TimelineEntry

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"}, description="UTC")]


class TimelineEntryView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event: str
    from_: Annotated[str | None, Field(alias="from")]
    to: str | None
    at: Timestamp
    event_id: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, entry: TimelineEntry) -> TimelineEntryView:
        return cls.model_construct(
            event=entry.kind,
            from_=entry.from_status,
            to=entry.to_status,
            at=iso_time(entry.at),
            event_id=entry.event_id,
            detail=entry.detail,
        )


class CallSummary(BaseModel):
    """A call in lists and in call events: status, outcome, times, ring and talk time."""

    call_id: str
    room: Annotated[str, Field(description="The LiveKit room: the call id")]
    phone_number: str
    name: str
    language: str
    emotion: str
    status: Status
    outcome: str | None
    reason: str | None
    created_at: Timestamp
    answered_at: Timestamp | None
    ended_at: Timestamp | None
    updated_at: Timestamp
    ring_s: Annotated[
        float | None, Field(description="Placing to answer (or to the end, if unanswered)")
    ]
    talk_s: Annotated[float | None, Field(description="Answer to end; 0 if never answered")]
    ringing_timeout_s: int | None
    max_duration_s: int | None
    campaign_id: Annotated[str | None, Field(description="The campaign that placed the call")]

    @staticmethod
    def fields_of(call: CallRecord) -> dict[str, Any]:
        return {
            "call_id": call.call_id,
            "room": call.call_id,
            "phone_number": call.phone_number,
            "name": call.caller_name,
            "language": call.language,
            "emotion": call.emotion,
            "status": call.status,
            "outcome": call.outcome,
            "reason": call.reason,
            "created_at": iso_time(call.created_at),
            "answered_at": iso_time(call.answered_at),
            "ended_at": iso_time(call.ended_at),
            "updated_at": iso_time(call.updated_at),
            "ring_s": call.ring_s,
            "talk_s": call.talk_s,
            "ringing_timeout_s": call.ringing_timeout_s,
            "max_duration_s": call.max_duration_s,
            "campaign_id": call.campaign_id,
        }

    @classmethod
    def of(cls, call: CallRecord) -> CallSummary:
        return cls.model_construct(**cls.fields_of(call))


class CallView(CallSummary):
    """One call in full: what it was placed with, what its agent reported (the conversation
    and its analysis), and every event it went through."""

    config: Annotated[
        dict[str, Any] | None, Field(description="The configuration the call was placed with")
    ]
    ended_by: Annotated[
        EndedBy | None,
        Field(description="Who ended the call, when known (callee, agent, api, system)"),
    ]
    amd: Annotated[AmdCategory | None, Field(description="The agent's answering-machine verdict")]
    transcript: Annotated[
        list[TranscriptTurn],
        Field(description="The conversation; at_s counts from the answer"),
    ]
    summary: str | None
    success: SuccessVerdict | None
    extracted: Annotated[
        dict[str, Any] | None, Field(description="The fields the request's analysis asked for")
    ]
    analysis_errors: list[str]
    usage: Annotated[dict[str, Any] | None, Field(description="What the agent's models used")]
    simulated: Annotated[
        bool | None,
        Field(
            description="The report came from the sandbox's scripted conversation; null until "
            "the final report arrives"
        ),
    ]
    report_status: Annotated[
        Literal["pending", "complete", "unavailable"],
        Field(
            description="complete once the agent's final report arrived; unavailable when it "
            "never did (10 minutes after the end), or at once when the call ended with no agent "
            "to report on it (its dispatch failed, or no agent joined; `reason` says which)"
        ),
    ]
    personal_data_erased_at: Annotated[
        Timestamp | None,
        Field(
            description="When the conversation was erased (CALL_DATA_RETENTION_DAYS), or the"
            " call's personal data on request (POST /calls/{call_id}/erase, POST /calls/erase)"
        ),
    ]
    timeline: list[TimelineEntryView]

    @classmethod
    def of(cls, call: CallRecord, now: float | None = None) -> CallView:
        report = call.report
        return cls.model_construct(
            **CallSummary.fields_of(call),
            config=call.config,
            # Canceled is a hang-up through the API, whatever the agent's report says.
            ended_by="api" if call.status is Status.CANCELED else call.ended_by,
            amd=call.amd,
            transcript=list(call.transcript),
            summary=report.summary if report else None,
            success=report.success if report else None,
            extracted=report.extracted if report else None,
            analysis_errors=list(report.analysis_errors) if report else [],
            usage=report.usage if report else None,
            simulated=report.simulated if report else None,
            report_status=call.report_status(time.time() if now is None else now),
            personal_data_erased_at=iso_time(call.data_erased_at),
            timeline=[TimelineEntryView.of(e) for e in call.timeline],
        )


def dump(model: BaseModel) -> dict[str, Any]:
    """A view as JSON-ready data (field aliases, enums as values)."""
    return model.model_dump(mode="json", by_alias=True)
