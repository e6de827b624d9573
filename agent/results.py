"""What a call produced: its transcript, who ended it, its usage, and the final report.

The transcript is captured from the session's `conversation_item_added` events (finished
turns only, both sides) and each turn is reported as it happens, so the server has the
conversation even if the job dies before the end. When the job shuts down, `finish_call`
runs the post-call analysis the call asked for and sends the final report, then waits
(bounded) for every report to be delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from livekit import rtc
from livekit.agents import ConversationItemAddedEvent
from livekit.agents.llm import ChatMessage
from livekit.agents.metrics import (
    AgentSessionUsage,
    LLMModelUsage,
    STTModelUsage,
    TTSModelUsage,
)
from pydantic import ValidationError

from agent.analysis import NO_CONVERSATION, AnalysisResult, analyze
from agent.reporting import ReportSender
from common.config_store.model import AnalysisRequest
from common.contracts import (
    MAX_REPORT_BYTES,
    MAX_TURN_CHARS,
    MAX_TURNS,
    CallReport,
    EndedBy,
    TranscriptTurn,
)
from common.text import repaired_text

if TYPE_CHECKING:
    from livekit.plugins.openai import LLM

logger = logging.getLogger(__name__)

ROLES: Final = {"assistant": "agent", "user": "callee"}
# Room for the report's envelope (call id, seq, kind, at) around the final report.
_ENVELOPE_BYTES: Final = 1024


class TranscriptRecorder:
    """Finished turns, in the order they finished, each handed to `on_turn` as it comes.

    `at_s` counts from the answer (`start`). What was heard before it is no turn: the line
    carries audio while it rings (ringback, a carrier's "the person you are calling is not
    available"), and the callee says nothing before they pick up. Messages are taken once each
    (by id): the agent's first-turn gate hands over the callee's words itself, because a turn
    it stops never reaches the session's history or its events.
    """

    def __init__(
        self, on_turn: Callable[[TranscriptTurn], None], call_id: str | None = None
    ) -> None:
        self._on_turn = on_turn
        self._call_id = call_id
        self._answered_at: float | None = None
        self._seen: set[str] = set()
        self._turns: list[TranscriptTurn] = []
        self._dropped = 0  # turns past MAX_TURNS, not kept

    @property
    def dropped(self) -> int:
        """How many finished turns came after the transcript's MAX_TURNS: not kept."""
        return self._dropped

    @property
    def turns(self) -> list[TranscriptTurn]:
        return list(self._turns)

    @property
    def agent_spoke(self) -> bool:
        """Whether the agent has said a turn to the callee (one finished, or cut off after a
        word): a call that fails before it is one the callee answered to silence."""
        return any(turn.role == "agent" for turn in self._turns)

    def agent_spoke_before(self, at: float) -> bool:
        """Whether the agent had begun a turn it said to the callee before `at` (unix
        seconds): a provider's failure then, and the apology said after it
        (`agent.session.CallSession`) is no turn of the conversation the call was for."""
        if self._answered_at is None:
            return False
        before = at - self._answered_at
        return any(turn.role == "agent" and turn.at_s < before for turn in self._turns)

    def start(self, answered_at: float) -> None:
        """The call was answered at `answered_at` (unix seconds): turns count from here."""
        self._answered_at = answered_at

    def on_item_added(self, event: ConversationItemAddedEvent) -> None:
        """`session.on("conversation_item_added", ...)`: chat messages only."""
        if isinstance(event.item, ChatMessage):
            self.add_message(event.item)

    def add_message(self, message: ChatMessage) -> bool:
        """Take a finished message as a turn; False if it was heard before the answer."""
        role = ROLES.get(message.role)
        if role is None or message.id in self._seen:
            return True
        self._seen.add(message.id)
        if self._answered_at is None:
            logger.debug("heard before the call was answered; not a turn of it")
            return False
        # A lone surrogate (half an emoji from a broken STT or LLM string) as U+FFFD: the
        # turn was refused whole, and lost, for it.
        text = repaired_text(message.text_content or "").strip()
        if not text:  # a reply cut off before a word was spoken: nothing was said
            return True
        if len(self._turns) >= MAX_TURNS:
            if not self._dropped:
                logger.warning(
                    "call %s: transcript is full (%d turns); later turns are dropped",
                    self._call_id,
                    MAX_TURNS,
                )
            self._dropped += 1
            return True
        turn = TranscriptTurn(
            role="agent" if role == "agent" else "callee",
            text=text[:MAX_TURN_CHARS],
            at_s=min(max(0.0, message.created_at - self._answered_at), 86400.0),
            interrupted=message.interrupted,
        )
        self._turns.append(turn)
        self._on_turn(turn)
        return True


# ----------------------------------------------------------------------------- who ended it


class CallEnd:
    """The facts that tell who ended the call, gathered while it runs.

    `agent_hung_up` is set by our own hang-up *before* it deletes the room, because the
    callee's participant then leaves with ROOM_DELETED, which alone would read as "the API".
    """

    def __init__(self) -> None:
        self.answered = False
        self.agent_hung_up = False
        self.failed = False  # the agent failed (an error closed its session, or the job's)
        # The outcome the agent decided and put on the room (voicemail): a failure after it
        # does not overwrite it with `failed`.
        self.outcome: str | None = None
        self.sip_disconnect_reason: int | None = None
        self.room_disconnect_reason: int | None = None

    def on_participant_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        """`room.on("participant_disconnected", ...)`: the phone line's first leave counts."""
        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
            return
        reason = participant.disconnect_reason
        if self.sip_disconnect_reason is None and reason is not None:
            self.sip_disconnect_reason = int(reason)

    def on_room_disconnected(self, reason: int) -> None:
        """`room.on("disconnected", ...)`: our own connection's end. When the room is deleted
        the phone line's leave may never reach us, but this does."""
        if self.room_disconnect_reason is None:
            self.room_disconnect_reason = int(reason)

    def ended_by(self) -> EndedBy:
        if self.failed and not self.agent_hung_up:
            return "system"  # its room deleted on the failure: not the server's hang-up
        return decide_ended_by(
            self.answered,
            self.agent_hung_up,
            self.sip_disconnect_reason,
            self.room_disconnect_reason,
        )


def decide_ended_by(
    answered: bool, agent_hung_up: bool, sip_reason: int | None, room_reason: int | None = None
) -> EndedBy:
    """agent: our hang-up ran; callee: they hung up; api: the room was deleted by someone
    else (the server's hang-up); system: anything else (not answered, errors, timeouts)."""
    if not answered:
        return "system"
    if agent_hung_up:
        return "agent"
    if sip_reason == rtc.DisconnectReason.CLIENT_INITIATED:
        return "callee"
    deleted = rtc.DisconnectReason.ROOM_DELETED
    if sip_reason == deleted or (sip_reason is None and room_reason == deleted):
        return "api"
    return "system"


# ----------------------------------------------------------------------------- usage


def usage_to_json(
    usage: AgentSessionUsage | None, analysis: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`session.usage` (one entry per provider and model) as plain JSON, by kind."""
    doc: dict[str, Any] = {}
    for entry in usage.model_usage if usage is not None else []:
        if isinstance(entry, LLMModelUsage):
            doc.setdefault("llm", []).append(
                {
                    "provider": entry.provider,
                    "model": entry.model,
                    "input_tokens": entry.input_tokens,
                    "output_tokens": entry.output_tokens,
                }
            )
        elif isinstance(entry, STTModelUsage):
            doc.setdefault("stt", []).append(
                {
                    "provider": entry.provider,
                    "model": entry.model,
                    "audio_duration_s": round(entry.audio_duration, 3),
                }
            )
        elif isinstance(entry, TTSModelUsage):
            doc.setdefault("tts", []).append(
                {
                    "provider": entry.provider,
                    "model": entry.model,
                    "characters": entry.characters_count,
                    "audio_duration_s": round(entry.audio_duration, 3),
                }
            )
    if analysis:
        doc["analysis"] = dict(analysis)
    return doc


# ----------------------------------------------------------------------------- the report


def build_call_report(
    transcript: Sequence[TranscriptTurn],
    analysis: AnalysisResult | None,
    usage: dict[str, Any],
    ended_by: EndedBy,
    *,
    turns_dropped: int = 0,
) -> CallReport:
    """The final report, its transcript shortened (latest turns first) if the whole would
    exceed the server's body limit; every turn was reported on its own already.
    `turns_dropped`: turns the call had after the transcript's MAX_TURNS (not kept, not
    analysed), which its `analysis_errors` say."""
    found = analysis or AnalysisResult()
    errors = found.errors[:100]
    if turns_dropped:
        errors = [*errors[:99], dropped_turns_note(turns_dropped)]
    parts: dict[str, Any] = {
        "transcript": list(transcript)[:MAX_TURNS],
        "summary": found.summary,
        "success": found.success,
        "extracted": found.extracted,
        "analysis_errors": errors,
        "usage": usage,
        "ended_by": ended_by,
    }
    return _fit(_acceptable(parts))


def dropped_turns_note(dropped: int) -> str:
    """What the final report says of the turns past the transcript's MAX_TURNS."""
    return (
        f"transcript: the call's {dropped} turn(s) after its first {MAX_TURNS} were not kept"
        " (a transcript keeps at most that many), nor analysed"
    )


def _acceptable(parts: dict[str, Any]) -> CallReport:
    """The report of `parts`, less any part the server would refuse (a NaN in a model's
    usage, a lone surrogate in what the LLM wrote): that part is left out and named in
    `analysis_errors`, so that the rest still goes out."""
    try:
        return CallReport(**parts)
    except ValidationError as exc:
        refused = sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]} - {"transcript"})
    # Names only: a refused value may not even be printable (a lone surrogate).
    logger.warning("final report: left out what the server would refuse: %s", ", ".join(refused))
    notes = [f"{name}: left out, the server would refuse it" for name in refused]
    kept = {name: value for name, value in parts.items() if name not in refused}
    kept["analysis_errors"] = [*kept.get("analysis_errors", [])[: 100 - len(notes)], *notes]
    try:
        return CallReport(**kept)
    except ValidationError:  # not expected: the turns are TranscriptTurns already
        return CallReport(ended_by=parts["ended_by"], analysis_errors=notes)


def _size(report: CallReport) -> int:
    return len(report.model_dump_json(exclude_none=True).encode()) + _ENVELOPE_BYTES


def _fit(report: CallReport) -> CallReport:
    if _size(report) <= MAX_REPORT_BYTES:
        return report
    turns = report.transcript
    low, high = 0, len(turns)  # the longest prefix that fits lies in [low, high)
    while low < high - 1:
        mid = (low + high) // 2
        if _size(report.model_copy(update={"transcript": turns[:mid]})) <= MAX_REPORT_BYTES:
            low = mid
        else:
            high = mid
    note = (
        f"transcript: only the first {low} of {len(turns)} turns fit in the final report;"
        " all were reported one by one"
    )
    errors = [*report.analysis_errors[:99], note]
    return report.model_copy(update={"transcript": turns[:low], "analysis_errors": errors})


async def finish_call(
    sender: ReportSender,
    transcript: Sequence[TranscriptTurn],
    *,
    ended_by: EndedBy,
    session_usage: AgentSessionUsage | None,
    analysis_request: AnalysisRequest | None,
    llm: LLM | None,
    instructions: str,
    analysis_timeout_s: float,
    flush_timeout_s: float,
    reached_machine: bool = False,
    turns_dropped: int = 0,
) -> CallReport:
    """Analyse (if asked), send the final report, wait for delivery and close the sender.

    `reached_machine`: a machine answered (the call's outcome is voicemail). Unless the agent
    said something to it (the call's voicemail message), there was no conversation: what the
    transcript holds is the machine's greeting, which the LLM was asked to summarise, judge
    and extract fields from. `turns_dropped`: the turns after the transcript's MAX_TURNS
    (`TranscriptRecorder.dropped`), which the report says were not kept."""
    analysis: AnalysisResult | None = None
    if analysis_request is not None:
        spoken = any(turn.role == "agent" for turn in transcript)
        if not transcript or (reached_machine and not spoken):
            analysis = AnalysisResult(errors=[NO_CONVERSATION])
        elif llm is None:
            analysis = AnalysisResult(errors=["analysis failed: no LLM for this call"])
        else:
            analysis = await analyze(
                llm,
                analysis_request,
                transcript,
                context_instructions=instructions,
                timeout_s=analysis_timeout_s,
            )
    usage = usage_to_json(session_usage, analysis.usage if analysis else None)
    report = build_call_report(transcript, analysis, usage, ended_by, turns_dropped=turns_dropped)
    sender.final(report)
    await sender.aclose(flush_timeout_s)
    return report
