"""Everything that crosses a process boundary, written once, read and written through here.

- The agent dispatch metadata: what the server sends each agent job (its call id, a snapshot
  of its config, how long the phone rings, where to report).
- The agent's reports to the server (`AgentReport`): the answer, each transcript turn, the
  answering-machine verdict, and the final report with the post-call analysis.
- The room metadata an agent sets to tell how a call ended (voicemail), which the
  `room_finished` webhook carries back to the server.
- The participant attributes LiveKit's SIP service sets on the callee's participant.

The writer and the reader of each message use the same model, so they cannot drift apart.
Readers are lenient: a message that cannot be read counts as absent, never as a crash.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from common.json_values import MAX_DEPTH, check_plain_json
from common.text import is_unicode, shown_text, text_problem

logger = logging.getLogger(__name__)

# Participant attributes LiveKit's SIP service sets (livekit/protocol livekit/attrs.go).
ATTR_SIP_CALL_ID: Final = "sip.callID"
ATTR_SIP_TRUNK_ID: Final = "sip.trunkID"
ATTR_SIP_PHONE_NUMBER: Final = "sip.phoneNumber"
ATTR_SIP_CALL_STATUS: Final = "sip.callStatus"
# The agent name livekit-agents gives its participant (the worker's AGENT_NAME).
ATTR_AGENT_NAME: Final = "lk.agent.name"
# Not a LiveKit attribute (LiveKit's webhooks carry no SIP code; nor does the sandbox's): a SIP
# final response code, read where a SIP bridge sets it on the participant.
ATTR_SIP_CALL_STATUS_CODE: Final = "sip.callStatusCode"

SIP_STATUS_DIALING: Final = "dialing"
SIP_STATUS_RINGING: Final = "ringing"
SIP_STATUS_ACTIVE: Final = "active"
SIP_STATUS_HANGUP: Final = "hangup"
# Values of sip.callStatus once the callee has answered.
ANSWERED_SIP_STATUSES: Final = frozenset({SIP_STATUS_ACTIVE, SIP_STATUS_HANGUP})

OUTCOME_VOICEMAIL: Final = "voicemail"
# The agent failed (a provider's error, no config for the call) and ended the call: the call
# settles with the room metadata's `reason`, `failed` if unanswered (not no_answer).
OUTCOME_FAILED: Final = "failed"
# The agent ended an answered call on the callee's silence (asked whether they were there,
# silent on): the call settles `completed`, its reason saying so (a conversation that ended
# well has none), so that a call nobody spoke on can be told apart and called again.
OUTCOME_CALLEE_SILENT: Final = "callee_silent"
# No outcome: recorded by an agent taking back one it recorded (`voicemail`, when the callee
# turned out a person asking not to be called), the call settles as any answered call does.
OUTCOME_NONE: Final = ""
MAX_OUTCOME_REASON_CHARS: Final = 200


def _json_object(raw: str, what: str) -> dict[str, Any] | None:
    if not raw.strip():
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):  # signed or not, metadata may be any text
        logger.debug("%s is not JSON; ignoring it", what)
        return None
    if not isinstance(doc, dict):
        logger.debug("%s is not a JSON object; ignoring it", what)
        return None
    return doc


# Dispatched to a call's room, our agent waits this long past the call's ringing timeout for
# the callee (the SIP participant joins a moment after the dispatch), then ends its job and
# deletes the room (agent/worker.py); the sandbox, playing the agent, does the same.
CALLEE_WAIT_GRACE_S = 15.0


class DispatchMetadata(BaseModel):
    """What the server puts in each agent dispatch (`ctx.job.metadata` in the agent)."""

    model_config = ConfigDict(frozen=True)

    call_id: str | None = None
    phone_number: str | None = None
    config: dict[str, Any] | None = None
    ringing_timeout_s: int | None = None
    report_url: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def parse(cls, raw: str) -> DispatchMetadata:
        """The job's metadata; anything unreadable counts as absent, field by field."""
        doc = _json_object(raw, "dispatch metadata")
        if doc is None:
            return cls()
        config = doc.get("config")
        return cls(
            call_id=_nonempty_str(doc.get("call_id")),
            phone_number=_nonempty_str(doc.get("phone_number")),
            config=dict(config) if isinstance(config, dict) else None,
            ringing_timeout_s=_positive_int(doc.get("ringing_timeout_s")),
            report_url=_nonempty_str(doc.get("report_url")),
        )


def _nonempty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _positive_int(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _shown(value: object) -> str | None:
    return shown_text(value, MAX_OUTCOME_REASON_CHARS) if isinstance(value, str) else None


class RoomMetadata(BaseModel):
    """The room metadata an agent writes; `outcome` (and why, `reason`) is read back from
    `room_finished`."""

    model_config = ConfigDict(frozen=True)

    outcome: str | None = None
    reason: str | None = None
    spoke: bool | None = None
    """With a failure: whether the agent had said a turn to the callee before it (None: not
    told, as by an agent of an earlier release)."""

    @classmethod
    def parse(cls, raw: str) -> RoomMetadata:
        doc = _json_object(raw, "room metadata") or {}
        outcome, reason, spoke = doc.get("outcome"), doc.get("reason"), doc.get("spoke")
        # Shown and stored as the call's reason (the outcome in its timeline): whatever the
        # metadata holds (a NUL, a lone surrogate, a line break), it reads as text every
        # database can keep. An outcome as `{"outcome": "\\ud800"}` was a 500 for its
        # room_finished, every time LiveKit retried it, and the call waited for the reaper.
        return cls(
            outcome=_shown(outcome),
            reason=_shown(reason),
            spoke=spoke if isinstance(spoke, bool) else None,
        )

    @staticmethod
    def with_outcome(
        current: str, outcome: str, reason: str | None = None, *, spoke: bool | None = None
    ) -> str:
        """The room metadata JSON with `outcome` (and `reason` and `spoke`, if given) set,
        keeping the other keys of an object."""
        doc = _json_object(current, "room metadata") or {}
        doc["outcome"] = outcome
        if reason is not None:
            doc["reason"] = reason[:MAX_OUTCOME_REASON_CHARS]
        if spoke is not None:
            doc["spoke"] = spoke
        return json.dumps(doc, separators=(",", ":"))


# ----------------------------------------------------------------------------- agent reports

REPORTS_PATH: Final = "/agent/reports"
MAX_REPORT_BYTES: Final = 1024 * 1024
MAX_TURN_CHARS: Final = 8000
MAX_TURNS: Final = 2000
# The latest moment a report may carry (2100-01-01 UTC): past any real clock, and a time every
# reader (datetime, ISO 8601 text, the database) can take; 1e300 is a float but no moment.
MAX_REPORT_AT: Final = 4_102_444_800.0
# Every float in a report is finite: JSON's `Infinity`, `NaN` and `1e999` (which parsers read as
# inf) are refused. pydantic would write them as null, and the report would no longer read back.
_REPORT_MODEL: Final = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# The final report's free-form objects, as JSON: `extracted` holds up to 20 values of up to
# 2,000 characters each (agent/analysis.py); `usage` a few entries per model the call used.
MAX_EXTRACTED_BYTES: Final = 256 * 1024
MAX_USAGE_BYTES: Final = 64 * 1024
_FREE_FORM_BYTES: Final = {"extracted": MAX_EXTRACTED_BYTES, "usage": MAX_USAGE_BYTES}


def _kept(text: str) -> str:
    """`text`, if every database can keep it (`text_problem`: no lone surrogate, no NUL). A
    NUL in a report's call id was a 503 on PostgreSQL, whose text cannot hold one, and a 404
    on SQLite: the same report now gets the same 400 whichever database the server uses."""
    problem = text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return text


# A report's identifier (its call id), as every database can keep it.
KeptText = Annotated[str, AfterValidator(_kept)]


def _reported(text: str) -> str:
    """What the agent reports in words (what the callee said, what the LLM wrote), with each
    NUL as U+FFFD: PostgreSQL's text cannot hold one. Not refused: the agent cannot fix what
    it heard, and it builds these models itself, so a refusal would lose the turn or the
    report (a NUL in `usage` or `extracted` is refused: the agent then leaves that part out
    and says so). A lone surrogate is refused, as no encoding can hold it (pydantic checks
    for one only in a str with a length constraint, and not once a validator is attached)."""
    if not is_unicode(text):
        raise ValueError("must be valid Unicode text")
    return text.replace("\x00", "\ufffd")


ReportedText = Annotated[str, AfterValidator(_reported)]

AmdCategory = Literal["human", "machine-vm", "machine-ivr", "machine-unavailable", "uncertain"]
MACHINE_VERDICTS: Final = frozenset({"machine-vm", "machine-ivr", "machine-unavailable"})
EndedBy = Literal["callee", "agent", "api", "system"]


class TranscriptTurn(BaseModel):
    """One finished turn of the conversation; `at_s` counts from the answer."""

    model_config = _REPORT_MODEL

    role: Literal["agent", "callee"]
    text: Annotated[ReportedText, Field(max_length=MAX_TURN_CHARS)]
    at_s: Annotated[float, Field(ge=0, le=86400)]
    interrupted: bool = False


class AmdVerdict(BaseModel):
    """The answering-machine detection's verdict, and why (livekit-agents' AMD)."""

    model_config = _REPORT_MODEL

    category: AmdCategory
    reason: Annotated[ReportedText, Field(max_length=200)] = ""


class SuccessVerdict(BaseModel):
    model_config = _REPORT_MODEL

    achieved: bool
    reason: Annotated[ReportedText, Field(max_length=2000)] = ""


class CallReport(BaseModel):
    """The agent's final report: the conversation and its analysis."""

    model_config = _REPORT_MODEL

    transcript: Annotated[list[TranscriptTurn], Field(max_length=MAX_TURNS)] = Field(
        default_factory=list
    )
    summary: Annotated[ReportedText | None, Field(max_length=8000)] = None
    success: SuccessVerdict | None = None
    extracted: Annotated[
        dict[str, Any] | None,
        Field(
            description=f"A JSON object nested at most {MAX_DEPTH} levels deep,"
            f" at most {MAX_EXTRACTED_BYTES // 1024} KiB"
        ),
    ] = None
    analysis_errors: Annotated[list[ReportedText], Field(max_length=100)] = Field(
        default_factory=list
    )
    usage: Annotated[
        dict[str, Any],
        Field(
            description=f"A JSON object nested at most {MAX_DEPTH} levels deep,"
            f" at most {MAX_USAGE_BYTES // 1024} KiB"
        ),
    ] = Field(default_factory=dict)
    ended_by: EndedBy | None = None
    simulated: Annotated[
        bool, Field(description="Made by the sandbox from a scripted conversation, no LLM")
    ] = False

    @field_validator("extracted", "usage")
    @classmethod
    def _plain_json(
        cls, value: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        """Free-form, so checked as the call request's additional_params are: finite numbers,
        valid Unicode, bounded depth and size. Otherwise it could not be stored (a lone
        surrogate), or stored but not read back (200 levels deep), or would not be JSON."""
        if value is not None:
            check_plain_json(value, max_bytes=_FREE_FORM_BYTES[str(info.field_name)])
        return value


# do_not_call: the callee asked not to be called again (the server puts the number on the list)
ReportKind = Literal["answered", "turn", "amd", "final", "do_not_call"]
_KIND_FIELD: Final = {
    "answered": None,
    "turn": "turn",
    "amd": "amd",
    "final": "final",
    "do_not_call": None,
}


class AgentReport(BaseModel):
    """One report of an agent about its own call, POSTed to the server signed like a LiveKit
    webhook (common/signing.py, with a room grant naming the call). `seq` orders a call's
    reports and makes them idempotent: a report the server has seen is not applied again."""

    model_config = _REPORT_MODEL

    call_id: Annotated[KeptText, Field(min_length=1, max_length=100)]
    seq: Annotated[int, Field(ge=0, le=1_000_000, strict=True)]  # not true, "8" nor 7.0
    kind: ReportKind
    at: Annotated[
        float, Field(ge=0, le=MAX_REPORT_AT, description="When it happened (unix seconds)")
    ]
    turn: TranscriptTurn | None = None
    amd: AmdVerdict | None = None
    final: CallReport | None = None

    @model_validator(mode="after")
    def _carries_its_kind(self) -> AgentReport:
        wanted = _KIND_FIELD[self.kind]
        for name in ("turn", "amd", "final"):
            present = getattr(self, name) is not None
            if present and name != wanted:
                raise ValueError(f"a {self.kind} report carries {wanted or 'no body'}, not {name}")
            if not present and name == wanted:
                raise ValueError(f"a {self.kind} report carries {name}; it is missing")
        return self

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


# Several reports of one call may go in one POST: a JSON array of them, in order (at most
# MAX_REPORTS_PER_POST, the whole body at most MAX_REPORT_BYTES). agent/reporting.py sends so
# what queued while its last POST was out, and the turns it holds back up to REPORT_LINGER_S.
MAX_REPORTS_PER_POST: Final = 64
REPORT_BATCH: Final = TypeAdapter(
    Annotated[list[AgentReport], Field(min_length=1, max_length=MAX_REPORTS_PER_POST)]
)


def batch_body(bodies: list[bytes]) -> bytes:
    """The body of one POST of several reports (each `AgentReport.to_json()`), in order."""
    return b"[" + b",".join(bodies) + b"]"
