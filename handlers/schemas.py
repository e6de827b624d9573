"""The bodies of the HTTP answers that are not calls themselves (calls: common/calls/views.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.calls.outcomes import Status
from common.calls.views import CallSummary


class ErrorBody(BaseModel):
    status: Literal["error"] = "error"
    error: str
    details: list[dict[str, Any]] = Field(
        default_factory=list, description="Field-by-field problems, or failing components"
    )


class CallPlaced(BaseModel):
    status: Literal["success"] = "success"
    call_id: str
    room: str = Field(description="The LiveKit room: the call id")
    call_status: Status


class CallList(BaseModel):
    calls: list[CallSummary]
    next_before: float | None = Field(
        description="Pass as before= for the next page (unix seconds); null on the last page"
    )


class HangupAnswer(BaseModel):
    status: Literal["success"] = "success"
    call_id: str
    call_status: Status


class Ok(BaseModel):
    status: Literal["ok"] = "ok"


class ReportAnswer(BaseModel):
    status: Literal["success"] = "success"
    result: Literal["applied", "duplicate"]


class WebhookAnswer(BaseModel):
    status: Literal["success"] = "success"
    result: Literal["applied", "duplicate", "ignored"]


class OpenApiDocument(BaseModel):
    """An OpenAPI 3.1 document (this service's own)."""

    model_config = ConfigDict(extra="allow")

    openapi: str
