"""What our agent would report about a call the sandbox plays, from a scripted conversation.

A real agent reports (common/contracts.py `AgentReport`, signed as common/signing.py says) the
moment the callee answers, each finished turn, the answering-machine verdict and a final report
with its post-call analysis. The sandbox posts the same reports, to the URL the server put in
the dispatch metadata, as its simulated call unfolds:

- answered calls: `answered`; `amd` (human, or machine-vm for the voicemail number); a short
  conversation that opens with the call's `first_message` (or a greeting by name) and ends
  with goodbyes; a `final` report when the call ends.
- calls never answered (busy, no answer, trunk failure): only the `final` report, with no
  conversation.

The sandbox runs no LLM: its analysis is made from the script, deterministically (a summary
sentence, success "achieved", each requested field filled with a plausible value of its type)
and every final report says `"simulated": true`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from common.config_store.model import AnalysisField, CallConfig
from common.contracts import (
    AgentReport,
    AmdCategory,
    AmdVerdict,
    CallReport,
    DispatchMetadata,
    EndedBy,
    SuccessVerdict,
    TranscriptTurn,
)
from common.signing import sign_body
from sandbox.webhooks import Delivery, SignedPoster

logger = logging.getLogger(__name__)

REPORT_CONTENT_TYPE: Final = "application/json"
AMD_AFTER_S: Final = 0.5  # after the answer: when the verdict is reported
GOODBYE_BEFORE_END_S: Final = 1.0


@dataclass(frozen=True)
class ScriptedTurn:
    at_s: float  # from the answer
    role: Literal["agent", "callee"]
    text: str


def conversation(config: CallConfig, talk_s: float) -> list[ScriptedTurn]:
    """The scripted conversation of an answered call that lasts `talk_s` (pure)."""
    name = config.caller_name
    opening = config.options.first_message or (
        f"Hello {name}, this is your assistant calling. Is now a good time to talk?"
    )
    turns = [
        ScriptedTurn(0.5, "agent", opening),
        ScriptedTurn(1.5, "callee", f"Hi, yes, this is {name}. Go ahead."),
        ScriptedTurn(3.0, "agent", "Thank you. I'm calling to follow up, as agreed."),
        ScriptedTurn(4.5, "callee", "Sounds good to me, thanks."),
    ]
    closing = max(talk_s - GOODBYE_BEFORE_END_S, 0.0)
    kept = [t for t in turns if t.at_s < closing]
    kept.append(ScriptedTurn(closing, "agent", f"Thank you {name}, goodbye!"))
    return kept


def voicemail_turns(config: CallConfig, talk_s: float) -> list[ScriptedTurn]:
    """What is said on a voicemail box: the message, if the call's policy leaves one."""
    policy = config.options.voicemail
    if policy.action != "leave_message" or not policy.message:
        return []
    return [ScriptedTurn(min(1.0, talk_s), "agent", policy.message)]


def simulated_value(name: str, spec: AnalysisField, config: CallConfig) -> Any:
    """A plausible value of the field's type, made without an LLM."""
    if spec.type == "enum" and spec.enum:
        return spec.enum[0]
    if spec.type == "boolean":
        return True
    if spec.type in ("integer", "number"):
        return 1
    return config.caller_name if "name" in name else f"simulated {name.replace('_', ' ')}"


def simulated_report(
    config: CallConfig, turns: list[TranscriptTurn], ended_by: EndedBy, voicemail: bool
) -> CallReport:
    """The final report the sandbox's scripted call gets (deterministic)."""
    request = config.options.analysis
    summary = success = extracted = None
    if request is not None and turns:
        if request.summary:
            summary = f"Simulated call with {config.caller_name}: " + (
                "reached a voicemail box."
                if voicemail
                else "the agent introduced the call, the callee agreed and said goodbye."
            )
        if request.success_criteria:
            success = SuccessVerdict(
                achieved=not voicemail,
                reason="simulated: the scripted callee agreed"
                if not voicemail
                else "simulated: nobody answered in person",
            )
        extracted = {
            name: simulated_value(name, spec, config) for name, spec in request.fields.items()
        }
    return CallReport(
        transcript=turns,
        summary=summary,
        success=success,
        extracted=extracted,
        usage={},
        ended_by=ended_by,
        simulated=True,
    )


@dataclass
class SimulatedAgent:
    """The reports of one dispatched call, posted in order through `poster`."""

    metadata: DispatchMetadata
    poster: SignedPoster
    clock: Callable[[], float] = time.time
    config: CallConfig = field(init=False)
    _seq: int = 0
    _answered_at: float | None = None
    _turns: list[TranscriptTurn] = field(default_factory=list)
    _finished: bool = False

    def __post_init__(self) -> None:
        self.config = CallConfig.from_record(self.metadata.config or {})

    @property
    def call_id(self) -> str:
        return self.metadata.call_id or ""

    def answered(self) -> None:
        self._answered_at = self.clock()
        self._post(AgentReport(call_id=self.call_id, seq=0, kind="answered", at=0.0))

    def amd(self, category: AmdCategory) -> None:
        verdict = AmdVerdict(category=category, reason="simulated")
        self._post(AgentReport(call_id=self.call_id, seq=0, kind="amd", at=0.0, amd=verdict))

    def said(self, turn: ScriptedTurn) -> None:
        at_s = 0.0 if self._answered_at is None else self.clock() - self._answered_at
        spoken = TranscriptTurn(role=turn.role, text=turn.text, at_s=round(max(at_s, 0.0), 3))
        self._turns.append(spoken)
        self._post(AgentReport(call_id=self.call_id, seq=0, kind="turn", at=0.0, turn=spoken))

    def ended(self, ended_by: EndedBy, *, voicemail: bool = False) -> None:
        """The call is over: the final report (once, whoever ends it)."""
        if self._finished:
            return
        self._finished = True
        report = simulated_report(self.config, list(self._turns), ended_by, voicemail)
        self._post(AgentReport(call_id=self.call_id, seq=0, kind="final", at=0.0, final=report))

    def _post(self, report: AgentReport) -> None:
        """Number, time-stamp, sign and queue a report (one queue per call: in order)."""
        url = self.metadata.report_url
        if url is None or not self.call_id:
            return
        numbered = report.model_copy(update={"seq": self._seq, "at": self.clock()})
        self._seq += 1
        body = numbered.to_json()
        auth = sign_body(body, self.poster.api_key, self.poster.api_secret, room=self.call_id)
        self.poster.enqueue(
            f"reports-{self.call_id}",
            Delivery(
                url=lambda: url,
                body=body,
                authorization=auth,
                content_type=REPORT_CONTENT_TYPE,
                label=f"{report.kind} report {numbered.seq} of {self.call_id}",
            ),
        )
