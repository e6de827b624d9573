"""What our agent would report about a call the sandbox plays, from a scripted conversation.

A real agent reports (common/contracts.py `AgentReport`, signed as common/signing.py says) the
moment the callee answers, each finished turn, the answering-machine verdict and a final report
with its post-call analysis. The sandbox posts the same reports, to the URL the server put in
the dispatch metadata, as its simulated call unfolds, with the agent's own sender
(agent/reporting.py: several reports to a POST, turns held back up to its linger, scaled by the
time scale):

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

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp

from agent.plan import spoken_name
from agent.reporting import REPORT_LINGER_S, ReportSender
from common.config_store.model import AnalysisField, CallConfig
from common.contracts import (
    AmdCategory,
    AmdVerdict,
    CallReport,
    DispatchMetadata,
    EndedBy,
    SuccessVerdict,
    TranscriptTurn,
)
from sandbox.webhooks import USER_AGENT

logger = logging.getLogger(__name__)

# How long a sandbox call's last reports may still be retried once it is over (the agent's
# own retry deadline is 4 minutes per POST).
RETIRE_TIMEOUT_S: Final = 600.0
AMD_AFTER_S: Final = 0.5  # after the answer: when the verdict is reported
GOODBYE_BEFORE_END_S: Final = 1.0


@dataclass(frozen=True)
class ScriptedTurn:
    at_s: float  # from the answer
    role: Literal["agent", "callee"]
    text: str


def conversation(config: CallConfig, talk_s: float) -> list[ScriptedTurn]:
    """The scripted conversation of an answered call that lasts `talk_s` (pure)."""
    name = spoken_name(config.caller_name)  # as our agent says it: without TTS markup
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


class AgentReports:
    """Our agent's report senders (agent/reporting.py `ReportSender`) for the calls the
    sandbox plays, on one HTTP session: the reports go as our agent sends them, several to a
    POST, turns held back up to the linger (on the sandbox's clock: none at time scale 0),
    retried in real time (an outage of the server is no shorter when the sandbox plays its
    calls faster). A call's sender is flushed and closed when its simulation is over."""

    def __init__(self, *, api_key: str, api_secret: str, time_scale: float) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.linger_s = REPORT_LINGER_S * time_scale
        self._session: aiohttp.ClientSession | None = None
        self._open: set[ReportSender] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._delivered = self._refused = self._dropped = 0

    async def start(self) -> None:
        if self._session is None:
            # Signed like the sandbox's webhooks, and left out of the access log like them.
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})

    async def close(self) -> None:
        """Stop every sender now (nothing more is posted) and close the HTTP session."""
        for sender in self._open:
            sender.abandon()
        for task in self._closing:
            task.cancel()
        await asyncio.gather(*self._closing, return_exceptions=True)
        for sender in list(self._open):
            self._count(sender)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pending(self) -> set[asyncio.Task[None]]:
        """Senders still flushing the reports of calls that are over."""
        return {task for task in self._closing if not task.done()}

    def sender(self, call_id: str, url: str) -> ReportSender | None:
        """A sender for `call_id`'s reports (None while the sandbox is stopped)."""
        if self._session is None:
            return None
        sender = ReportSender(
            url,
            call_id,
            self.api_key,
            self.api_secret,
            session=self._session,
            linger_s=self.linger_s,
        )
        self._open.add(sender)
        return sender

    def retire(self, sender: ReportSender) -> None:
        """The call is over: send what waits, then close its sender."""
        if sender not in self._open:
            return
        task = asyncio.get_running_loop().create_task(sender.aclose(RETIRE_TIMEOUT_S))
        self._closing.add(task)

        def done(closed: asyncio.Task[None]) -> None:
            self._closing.discard(task)
            self._count(sender)
            # Taken here, or asyncio says it at the task's collection, without the call:
            # "Task exception was never retrieved".
            if not closed.cancelled() and (exc := closed.exception()) is not None:
                logger.error(
                    "sandbox agent: its report sender failed closing: %r", exc, exc_info=exc
                )

        task.add_done_callback(done)

    def _count(self, sender: ReportSender) -> None:
        if sender in self._open:
            self._open.discard(sender)
            self._delivered += len(sender.delivered) + len(sender.refused)
            self._refused += len(sender.refused)
            self._dropped += len(sender.dropped)

    @property
    def delivered(self) -> int:
        """Reports our server answered (any status below 500 but 429, or a 2xx's result)."""
        return self._delivered + sum(len(s.delivered) + len(s.refused) for s in self._open)

    @property
    def refused(self) -> int:
        return self._refused + sum(len(s.refused) for s in self._open)

    @property
    def dropped(self) -> int:
        return self._dropped + sum(len(s.dropped) for s in self._open)


@dataclass
class SimulatedAgent:
    """The reports of one dispatched call, through its own `ReportSender`."""

    metadata: DispatchMetadata
    reports: AgentReports
    clock: Callable[[], float] = time.time
    config: CallConfig = field(init=False)
    _sender: ReportSender | None = field(init=False, default=None)
    _answered_at: float | None = None
    _turns: list[TranscriptTurn] = field(default_factory=list)
    _finished: bool = False

    def __post_init__(self) -> None:
        self.config = CallConfig.from_record(self.metadata.config or {})
        url = self.metadata.report_url
        if url is not None and self.call_id:
            self._sender = self.reports.sender(self.call_id, url)

    @property
    def call_id(self) -> str:
        return self.metadata.call_id or ""

    def answered(self) -> None:
        self._answered_at = self.clock()
        if self._sender is not None:
            self._sender.answered(self._answered_at)

    def amd(self, category: AmdCategory) -> None:
        if self._sender is not None:
            self._sender.amd(AmdVerdict(category=category, reason="simulated"))

    def said(self, turn: ScriptedTurn) -> None:
        at_s = 0.0 if self._answered_at is None else self.clock() - self._answered_at
        spoken = TranscriptTurn(role=turn.role, text=turn.text, at_s=round(max(at_s, 0.0), 3))
        self._turns.append(spoken)
        if self._sender is not None:
            self._sender.turn(spoken)

    def ended(self, ended_by: EndedBy, *, voicemail: bool = False) -> None:
        """The call is over: the final report (once, whoever ends it)."""
        if self._finished:
            return
        self._finished = True
        if self._sender is not None:
            self._sender.final(
                simulated_report(self.config, list(self._turns), ended_by, voicemail)
            )

    def retire(self) -> None:
        """The call's simulation is over (however it ended): what waits is sent, then no more."""
        if self._sender is not None:
            self.reports.retire(self._sender)
