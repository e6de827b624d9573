"""The LiveKit agent worker: one job per outbound call, configured from that call alone.

`python -m agent dev|start|console` runs `build_server(settings)` through livekit-agents' CLI.
Each job runs `entrypoint` in its own process: it finds its call id, selects the call's config
(`agent.config_source`), builds the session from it (`agent.session`), waits for the callee to
pick up, tells a person from a machine (`agent.answer`) and greets them, leaves a message or
hangs up. Along the way it reports to the server (`agent.reporting`): the answer, the
verdict, each transcript turn (`agent.results`); when the job ends, however it ends, a
shutdown callback runs the post-call analysis (`agent.analysis`) and sends the final report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api, rtc
from livekit.agents import (
    AgentServer,
    AgentSession,
    CloseEvent,
    CloseReason,
    JobContext,
    JobRequest,
    room_io,
)
from livekit.agents.llm import LLM
from livekit.agents.voice.amd.detector import DetectionOptions
from livekit.plugins import cartesia, deepgram, openai  # noqa: F401
from livekit.rtc.room import EventTypes as RoomEvent

from agent.answer import handle_answer
from agent.cartesia_tts import CartesiaTTS
from agent.config_source import (
    NoCallConfigError,
    SelectedConfig,
    not_our_call,
    read_call_record,
    resolve_call_id,
    room_creation_time,
    select_config,
)
from agent.openai_llm import CallLLM
from agent.plan import SessionPlan, plan_session
from agent.reporting import ReportSender
from agent.results import CallEnd, TranscriptRecorder, finish_call
from agent.session import CallSession, build_session
from agent.spool import ReportSpool, resend_loop
from common.config_store.model import CallConfig
from common.config_store.store import ConfigStore
from common.contracts import (
    ATTR_AGENT_NAME,
    ATTR_SIP_CALL_STATUS,
    CALLEE_WAIT_GRACE_S,
    OUTCOME_FAILED,
    OUTCOME_VOICEMAIL,
    SIP_STATUS_ACTIVE,
    SIP_STATUS_HANGUP,
    DispatchMetadata,
    RoomMetadata,
)
from common.masking import clip_for_log, mask_phone, redact
from common.settings import Settings, environment, load_settings

# The plugins above are imported here, not where they are used: livekit-agents requires
# plugins to register on the main thread, and `console` runs jobs in a worker thread.

logger = logging.getLogger(__name__)


class CalleeWordsOutOfLogs(logging.Filter):
    """livekit-agents puts what the callee said, and the tools' arguments and outputs, in the
    `lk.pii.*` fields of its log records, and its formatters print every field: some at INFO
    and above, on every call (`amd prediction`: the callee's first words, a voicemail
    greeting's name and number; words said while the agent hangs up, at WARNING). They are
    left out above DEBUG: the conversation is the calls database's, erased with its retention."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            for key in [k for k in record.__dict__ if k.startswith("lk.pii.")]:
                del record.__dict__[key]
            _leave_out_spoken_text(record)
        # The job's room, a field of its lines (`received job request`, at INFO): another
        # app's inbound call dispatched to this agent's name is in a room LiveKit names
        # `<prefix>_<caller>_<random>`, the caller's number whole. Masked, as numbers are.
        room = record.__dict__.get("room")
        if isinstance(room, str):
            record.__dict__["room"] = redact(room)
        # A job's whole proto, a field of livekit-agents' WARNING `received assignment for an
        # unknown job` (LiveKit's assignment came after the worker stopped waiting for it, 7.5
        # s: a loaded worker, a slow LiveKit): its dispatch metadata is the call's number
        # whole, the callee's name and the instructions. Left out at every level, as the
        # server leaves them out of its log; the job's ids stay.
        job = record.__dict__.get("job")
        if isinstance(job, dict):
            record.__dict__["job"] = _without_metadata(job)
        return True


def _without_metadata(value: object) -> object:
    """`value` (a job's proto as a dict) with every `metadata` text left out (its length
    said) and every other text's phone numbers masked."""
    if isinstance(value, dict):
        return {
            key: f"[{len(item)} chars, left out of the log]"
            if key == "metadata" and isinstance(item, str)
            else _without_metadata(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_without_metadata(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


# livekit-agents names the text a TTS could not speak in its error's message (tts.py: "no
# audio frames were pushed for text: ..."), which it logs at WARNING for each retry and at
# ERROR when the session closes on it: the agent's words, the callee's name in its greeting,
# and what it repeated of the callee's (a number, an address), whenever Cartesia sent none.
SPOKEN_TEXT = re.compile(
    r"(no audio frames were pushed for text: )(.*?)(, retrying in \S+s)?\Z", re.DOTALL
)


def _leave_out_spoken_text(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed log call: its handler reports it, as ever
        return
    if SPOKEN_TEXT.search(message) is None:
        return
    record.msg = SPOKEN_TEXT.sub(
        lambda m: f"{m[1]}[{len(m[2].strip())} chars, left out of the log]{m[3] or ''}", message
    )
    record.args = None


# The loggers that put lk.pii.* fields in their records: livekit-agents' and its plugins'
# this agent uses (a logger's filter is not applied to its children's records: Deepgram's
# STT logs a message it does not know, the callee's words in it, at WARNING).
PII_LOGGERS = (
    "livekit.agents",
    "livekit.plugins.deepgram",
    "livekit.plugins.cartesia",
    "livekit.plugins.openai",
)


def keep_callee_words_out_of_logs() -> None:
    """On livekit-agents' loggers, in this process (the worker's, and each job's: it imports
    this module to run `entrypoint`); once."""
    for name in PII_LOGGERS:
        livekit_logger = logging.getLogger(name)
        if not any(isinstance(f, CalleeWordsOutOfLogs) for f in livekit_logger.filters):
            livekit_logger.addFilter(CalleeWordsOutOfLogs())


keep_callee_words_out_of_logs()

# Pauses between attempts to delete a call's room (hang up) that failed.
END_ROOM_RETRY_S = (0.5, 2.0)
# How long one request to LiveKit's API (delete the room, set its metadata) may take: the
# job's API client has none of its own but aiohttp's 5 minutes, and a LiveKit that does not
# answer held the hang-up's retries, and the final report after them, that long each.
LIVEKIT_REQUEST_TIMEOUT_S = 10.0

# After the call: the analysis, then delivering the reports (retried until the flush's end,
# then kept in AGENT_REPORT_SPOOL_DIR for the worker to send), both inside the time the worker
# gives a job process to exit (`build_server`).
ANALYSIS_TIMEOUT_S = 60.0
REPORT_FLUSH_TIMEOUT_S = 220.0
SHUTDOWN_PROCESS_TIMEOUT_S = 300.0
NOT_OURS = "not one of our calls"  # the shutdown reason of a job in another app's room

# A callee who picks up and says nothing for 5 s is greeted (verdict "uncertain") rather than
# left in silence for the detector's default 10 s.
AMD_OPTIONS = DetectionOptions(no_speech_threshold=5.0)

# Listen to the phone line only. The room (the call) ends with the session, but the worker
# deletes it itself (`_session_closed`): a failure is recorded on the room first, and
# RoomOptions.delete_room_on_close would race that with its own deletion.
CALL_ROOM_OPTIONS = room_io.RoomOptions(
    participant_kinds=[rtc.ParticipantKind.PARTICIPANT_KIND_SIP],
    delete_room_on_close=False,
)


def export_for_job_processes(settings: Settings, environ: MutableMapping[str, str]) -> None:
    """Make job processes use the settings this process started with.

    Jobs run in child processes that inherit the environment. Every variable this process
    read (`.env` overlaid by the environment) goes into it, and job processes read nothing
    else (`job_settings`): a `.env` edited while the worker runs, meant for its next start,
    crashed every new job before it could hang up when it had a typo. An absolute CONFIG_PATH
    pins them to the file this process resolved, whatever their working directory.
    """
    environ.update(environment())
    environ["CONFIG_PATH"] = str(Path(settings.config_path).resolve())
    environ["AGENT_REPORT_SPOOL_DIR"] = str(Path(settings.agent_report_spool_dir).resolve())


@functools.cache
def job_settings() -> Settings:
    """Settings in the job process, loaded once per process from the environment the worker
    exported (`export_for_job_processes`), not from `.env` again.

    Without the start-up check of CONFIG_PATH's file (the worker made it): a config.json that
    is no JSON object when a job starts (NUL bytes a crash left, a file copied over it) raised
    here, before the job could hang up, and the callee answered to silence. The job reads
    its call's record as it can, and uses the dispatch snapshot otherwise."""
    return load_settings(dotenv_path=None, config_file_read=False)


@functools.cache
def job_config_store() -> ConfigStore:
    settings = job_settings()
    return ConfigStore(
        settings.config_path, record_ttl_s=settings.config_record_ttl_s, read_only=True
    )


class JobCallControl:
    """`CallControl` for a real job: room metadata and room deletion through livekit.api."""

    def __init__(
        self,
        ctx: JobContext,
        room_name: str,
        end: CallEnd | None = None,
        sender: ReportSender | None = None,
    ) -> None:
        self._ctx = ctx
        self._room_name = room_name
        self._end = end
        self._sender = sender

    def do_not_call(self) -> None:
        if self._sender is None or not self._sender.enabled:
            logger.warning(
                "call %s: the callee asked not to be called again, but this job has no report "
                "URL to tell the server; add the number with POST /dnc",
                self._room_name,
            )
            return
        self._sender.do_not_call(time.time())

    async def set_outcome(self, outcome: str) -> None:
        if self._end is not None:  # decided, even if LiveKit does not take it now
            self._end.outcome = outcome or None  # OUTCOME_NONE: none decided (taken back)
        await record_outcome(self._ctx, self._room_name, outcome)

    async def hang_up(self) -> None:
        # Before the room goes: the callee then leaves with ROOM_DELETED, which without this
        # flag would read as a hang-up through the API.
        if self._end is not None:
            self._end.agent_hung_up = True
        await end_room(self._ctx, self._room_name)
        self._ctx.shutdown(reason="call ended by the agent")


async def record_outcome(
    ctx: JobContext,
    room_name: str,
    outcome: str,
    reason: str | None = None,
    *,
    spoke: bool | None = None,
) -> None:
    """Set the call's outcome (and why, and with a failure whether the agent had said a turn
    to the callee) on its room: `room_finished` carries it to the server."""
    if ctx.is_fake_job():
        logger.info("console: outcome %s not recorded (no room)", outcome)
        return
    metadata = RoomMetadata.with_outcome(ctx.room.metadata, outcome, reason, spoke=spoke)
    update = api.UpdateRoomMetadataRequest(room=room_name, metadata=metadata)
    await asyncio.wait_for(ctx.api.room.update_room_metadata(update), LIVEKIT_REQUEST_TIMEOUT_S)
    logger.info("call %s: room metadata outcome=%s", room_name, outcome or "(none: taken back)")


async def fail_call(
    ctx: JobContext,
    room_name: str,
    reason: str,
    decided: str | None = None,
    *,
    spoke: bool = False,
) -> bool:
    """End the call as failed: the reason recorded on the room, then the room deleted
    (`end_room`). The server settles the call with that reason: `failed` if nobody answered
    (not `no_answer`), `completed` if somebody did and the agent had `spoke`n to them (not
    without a word of why), `failed` if the callee answered to an agent that had said
    nothing. An outcome the agent `decided` before it failed (voicemail: a machine answered)
    stays the outcome, the failure its reason: recorded as `failed`, the call ended failed
    (or completed) though the voicemail was reached, and a campaign retrying failures called
    again."""
    if decided is not None:
        logger.info("call %s: keeping the outcome %s it had before it failed", room_name, decided)
    try:
        outcome, said = (OUTCOME_FAILED, spoke) if decided is None else (decided, None)
        await record_outcome(ctx, room_name, outcome, reason, spoke=said)
    except Exception as exc:  # the hang-up matters more than the outcome
        logger.warning(
            "call %s: could not record its failure on the room (%s: %s)",
            room_name,
            type(exc).__name__,
            clip_for_log(str(exc)),
        )
    return await end_room(ctx, room_name)


async def _delete_room(ctx: JobContext, room_name: str) -> None:
    """One request to delete the room, bounded by LIVEKIT_REQUEST_TIMEOUT_S."""
    delete = api.DeleteRoomRequest(room=room_name)
    await asyncio.wait_for(ctx.api.room.delete_room(delete), LIVEKIT_REQUEST_TIMEOUT_S)


async def end_room(ctx: JobContext, room_name: str) -> bool:
    """Delete the call's room, which hangs up the phone line; False if that failed.

    `JobContext.delete_room` logs a failure at WARNING and goes on, and the job would leave
    the callee on the line with nobody (until CALL_MAX_DURATION_S): here a failure is tried
    again, and one that persists is an ERROR naming the call. A room already gone is fine;
    a console (fake) job has none.
    """
    if ctx.is_fake_job():
        return True
    last = ""
    for attempt, pause in enumerate((*END_ROOM_RETRY_S, None), start=1):
        try:
            await _delete_room(ctx, room_name)
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return True
            last = f"{exc.code}: {clip_for_log(exc.message)}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {clip_for_log(str(exc))}"
        else:
            return True
        if pause is None:
            logger.error(
                "call %s: could not end the call (its room was not deleted after %d attempts,"
                " last: %s); the callee may stay on the line until the longest call ends it",
                room_name,
                attempt,
                last,
            )
            return False
        logger.warning("call %s: deleting its room failed (%s); trying again", room_name, last)
        await asyncio.sleep(pause)
    return False


def _is_sip(participant: rtc.Participant) -> bool:
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


async def wait_for_callee(room: rtc.Room, timeout_s: float) -> rtc.RemoteParticipant | None:
    """The SIP participant once the callee picks up (`sip.callStatus` = active), else None.

    The SIP participant joins while still dialing/ringing; only "active" means a person (or a
    machine) answered. None when the call is hung up or never answered within `timeout_s`.
    """
    answered: asyncio.Future[rtc.RemoteParticipant | None] = (
        asyncio.get_running_loop().create_future()
    )

    def settle(result: rtc.RemoteParticipant | None, why: str) -> None:
        if not answered.done():
            logger.info("callee %s", why)
            answered.set_result(result)

    def check(participant: rtc.RemoteParticipant) -> None:
        if not _is_sip(participant):
            return
        status = participant.attributes.get(ATTR_SIP_CALL_STATUS)
        if status == SIP_STATUS_ACTIVE:
            settle(participant, "answered")
        elif status == SIP_STATUS_HANGUP:
            settle(None, "hung up before answering")

    def on_attributes_changed(_changed: object, participant: rtc.RemoteParticipant) -> None:
        check(participant)

    def on_disconnected(participant: rtc.RemoteParticipant) -> None:
        if _is_sip(participant):
            settle(None, "left the call before answering")

    def on_connection_state(state: int) -> None:
        if state == rtc.ConnectionState.CONN_DISCONNECTED:
            settle(None, "no longer awaited: the agent left the room")

    handlers: dict[RoomEvent, Callable[..., None]] = {
        "participant_connected": check,
        "participant_attributes_changed": on_attributes_changed,
        "participant_disconnected": on_disconnected,
        "connection_state_changed": on_connection_state,
    }
    for event, handler in handlers.items():
        room.on(event, handler)
    try:
        for participant in list(room.remote_participants.values()):
            check(participant)
        return await asyncio.wait_for(answered, timeout_s)
    except TimeoutError:
        logger.info("callee did not answer within %.0f s", timeout_s)
        return None
    finally:
        for event, handler in handlers.items():
            room.off(event, handler)


def earlier_agent(room: rtc.Room) -> rtc.RemoteParticipant | None:
    """Another agent of this one's name in the room that joined before this job's (by join
    time, then identity: of two jobs that see each other, both name the same one), else
    None. An agent of another name (one the project dispatches to every room) is not ours,
    nor one that gives no name while this one does (livekit-agents always names its jobs:
    that one is another program's, and this job leaving would leave the callee with it)."""

    def order(participant: rtc.Participant) -> tuple[float, str]:
        joined = participant.joined_at
        return (joined.timestamp() if joined is not None else 0.0, participant.identity)

    me = room.local_participant
    mine, name = order(me), me.attributes.get(ATTR_AGENT_NAME)
    for participant in room.remote_participants.values():
        if (
            participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            and participant.attributes.get(ATTR_AGENT_NAME) == name
            and order(participant) < mine
        ):
            return participant
    return None


def _log_selected(call_id: str, selected: SelectedConfig, plan: SessionPlan) -> None:
    level = logging.WARNING if selected.record_changed else logging.INFO
    logger.log(
        level, "call %s: using config from %s (%s)", call_id, selected.source, selected.reason
    )
    logger.info(
        "call %s: language=%s emotion=%s (cartesia %s) llm=%s instructions=%d chars",
        call_id,
        plan.language,
        plan.emotion,
        plan.tts.emotion,
        plan.llm.model,
        len(plan.instructions),
    )
    # The callee's name and the instructions' words only at DEBUG, as the server logs them: a
    # short instruction ("remind Ms Lee of the 300 dollars she owes") was logged whole at INFO
    # on the agent's host, and the name on every call. Numbers in them masked, as the
    # server's lines mask them (`call back on +1 415 555 0100` was written whole here).
    logger.debug(
        "call %s: caller=%s instructions: %s",
        call_id,
        redact(plan.caller_name),
        clip_for_log(redact(plan.instructions)),
    )


async def _refuse(ctx: JobContext, call_id: str, error: NoCallConfigError) -> None:
    """Our call, with no config the agent can use: its callee must not hear silence, so the
    call is ended, the reason on its room."""
    logger.error("call %s: refusing job and hanging up: %s", call_id, error)
    await fail_call(ctx, ctx.job.room.name, error.outcome_reason)
    ctx.shutdown(reason="no config for this call")


def _warn_not_ours(room_name: str, why: str) -> None:
    # Another app's room may hold a number: LiveKit names an inbound call's room
    # `<prefix>_<caller>_<random>` (`call-_+14155550188_XyZ1`). Masked, as numbers are.
    logger.warning(
        "room %s is not one of our calls (%s): refusing the job and leaving the room as it"
        " is. Another app of this LiveKit project dispatches to this agent's name"
        " (AGENT_NAME=%r): give this service's agent a name of its own, the same on its server",
        redact(repr(room_name)),
        redact(why),
        job_settings().agent_name,
    )


async def request_job(request: JobRequest) -> None:
    """Take a job only for a room that can be proved one of our calls (`not_our_call`).
    Another app's job is rejected as it is offered, not accepted and then dropped: rejected
    without `terminate`, LiveKit offers it to another worker of the agent name (that app's
    own), where a job this worker accepted was that app's no more. The entrypoint checks
    again (a `console` job is never offered)."""
    metadata = DispatchMetadata.parse(request.job.metadata)
    room_name = request.room.name
    why = not_our_call(metadata, room_name, has_record=False)
    if why is not None:  # its dispatch does not say: config.json may hold the call's record
        record, _ = await read_call_record(job_config_store(), room_name)
        why = not_our_call(metadata, room_name, has_record=record is not None)
    if why is None:
        await request.accept()
        return
    _warn_not_ours(room_name, why)
    await request.reject(terminate=False)


def _leave_alone(ctx: JobContext, why: str, job: _Job | None = None) -> None:
    """A room that cannot be proved one of our calls (`why`): the job is refused, and the
    room is left as it is. Refused by deleting it, another app's session dispatched to the
    same agent name ended (its room's metadata overwritten with our outcome first)."""
    _warn_not_ours(ctx.job.room.name, why)
    if job is not None:
        job.not_ours = True
    ctx.shutdown(reason=NOT_OURS)


@dataclass
class _Job:
    """What the shutdown callback needs, filled in as the job gets that far."""

    call_id: str
    sender: ReportSender
    recorder: TranscriptRecorder
    end: CallEnd = field(default_factory=CallEnd)
    plan: SessionPlan | None = None
    session: CallSession | None = None
    hang_up: asyncio.Task[object] | None = None
    """The room's end once the session closed (awaited before the final report)."""
    second: bool = False
    """Another agent had the call already (LiveKit dispatched it twice): this job left."""
    not_ours: bool = False
    """The room is not one of our calls: the job refused it, and reports nothing on it."""


async def _finish(job: _Job) -> None:
    """The post-call analysis and the final report, then every report delivered (bounded)."""
    if job.second or job.not_ours:  # the other agent's call; another app's room
        job.sender.abandon()
        return
    if job.hang_up is not None:  # the call's line first: the report can wait
        await asyncio.gather(job.hang_up, return_exceptions=True)
    session, plan = job.session, job.plan
    llm = session.llm if session is not None else None
    try:
        report = await finish_call(
            job.sender,
            job.recorder.turns,
            ended_by=job.end.ended_by(),
            session_usage=session.usage if session is not None else None,
            analysis_request=plan.analysis if plan is not None else None,
            llm=llm if isinstance(llm, openai.LLM) else None,
            instructions=plan.instructions if plan is not None else "",
            analysis_timeout_s=ANALYSIS_TIMEOUT_S,
            flush_timeout_s=REPORT_FLUSH_TIMEOUT_S,
            reached_machine=job.end.outcome == OUTCOME_VOICEMAIL,
            turns_dropped=job.recorder.dropped,
        )
    except Exception:
        logger.exception("call %s: the final report failed", job.call_id)
        await job.sender.aclose(REPORT_FLUSH_TIMEOUT_S)
        return
    logger.info(
        "call %s: final report: %d turns, ended by %s%s",
        job.call_id,
        len(report.transcript),
        report.ended_by,
        f", analysis errors: {len(report.analysis_errors)}" if report.analysis_errors else "",
    )


def _start_job(ctx: JobContext, call_id: str, metadata: DispatchMetadata) -> _Job:
    settings = job_settings()
    sender = ReportSender(
        metadata.report_url,
        call_id,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        spool=ReportSpool(settings.agent_report_spool_dir),
    )
    job = _Job(call_id, sender, TranscriptRecorder(sender.turn, call_id))

    async def on_shutdown(_reason: str) -> None:
        await _finish(job)

    # However the job ends (hang-up, room deleted, refusal, crash), the final report goes out.
    ctx.add_shutdown_callback(on_shutdown)
    return job


async def entrypoint(ctx: JobContext) -> None:
    """One call: select its config, build its session, greet the callee once they answer."""
    room_name = ctx.job.room.name
    metadata = DispatchMetadata.parse(ctx.job.metadata)
    try:
        call_id = resolve_call_id(metadata, room_name)
    except NoCallConfigError as exc:  # the server names each dispatch after its room
        _leave_alone(ctx, not_our_call(metadata, room_name, has_record=False) or str(exc))
        return
    ctx.log_context_fields = {"call_id": call_id}
    if metadata.phone_number:
        logger.info("call %s: job for %s", call_id, mask_phone(metadata.phone_number))
    job = _start_job(ctx, call_id, metadata)
    try:
        await _run_call(ctx, job, metadata, room_name)
    except Exception as exc:
        # The server dialled the callee into this room: whatever failed here (a provider's
        # key, the session, the network), leave nobody on the line with silence.
        logger.exception("call %s: the agent failed; hanging up", call_id)
        job.end.failed = True
        reason = f"the agent failed: {failure_name(exc)}"
        await fail_call(ctx, room_name, reason, job.end.outcome, spoke=job.recorder.agent_spoke)
        ctx.shutdown(reason="the agent failed")


async def _run_call(ctx: JobContext, job: _Job, metadata: DispatchMetadata, room_name: str) -> None:
    """Select the call's config, build its session, wait for the answer and greet."""
    settings = job_settings()
    call_id = job.call_id
    record, no_record = await read_call_record(job_config_store(), call_id)
    if not ctx.is_fake_job() and (
        why := not_our_call(metadata, call_id, has_record=record is not None)
    ):
        _leave_alone(ctx, why, job)
        return
    created = room_creation_time(ctx.job.room.creation_time, ctx.job.room.creation_time_ms)
    try:
        selected = select_config(
            call_id,
            record,
            metadata.config,
            created.at,
            granularity_s=created.granularity_s,
            no_record=no_record,
        )
    except NoCallConfigError as exc:
        if not ctx.is_fake_job():
            await _refuse(ctx, call_id, exc)
            return
        # `console` runs a local fake job with no dispatch and no call: use the defaults.
        logger.warning("console: %s; talking with the default config", exc)
        plan = plan_session(CallConfig(), settings, call_id=call_id, source="console-defaults")
    else:
        plan = plan_session(selected.config, settings, call_id=call_id, source=selected.source)
        _log_selected(call_id, selected, plan)
    job.plan = plan

    await ctx.connect()
    if not ctx.is_fake_job() and (first := earlier_agent(ctx.room)) is not None:
        # Two agents would both greet the callee and talk over each other, and report the
        # call twice under the same sequence numbers (a transcript of both, mixed).
        logger.warning(
            "call %s: another agent (%s) is already on this call: LiveKit dispatched it twice;"
            " this job leaves it to that one",
            call_id,
            first.identity,
        )
        job.second = True
        ctx.shutdown(reason="another agent has this call")
        return
    control = JobCallControl(ctx, room_name, job.end, job.sender)
    session, agent = build_session(plan, settings, control, on_held_turn=job.recorder.add_message)
    job.session = session
    session.on("conversation_item_added", job.recorder.on_item_added)
    # The session closes when the callee hangs up; the call (room) and the job end with it.
    session.on("close", functools.partial(_session_closed, ctx, job))
    ctx.room.on("participant_disconnected", job.end.on_participant_disconnected)
    ctx.room.on("disconnected", job.end.on_room_disconnected)
    await session.start(agent=agent, room=ctx.room, room_options=CALL_ROOM_OPTIONS)

    if ctx.is_fake_job():  # console: the terminal "answers" at once, and is a person
        job.end.answered = True
        job.recorder.start(time.time())
        agent.greet()
        return
    ringing_s = metadata.ringing_timeout_s or settings.call_ringing_timeout_s
    waiting = asyncio.ensure_future(wait_for_callee(ctx.room, ringing_s + CALLEE_WAIT_GRACE_S))
    if (refused := await key_refused_while(waiting, session)) is not None:
        # A provider refused the key as the session connected ahead: nothing could be said
        # to the callee, who would answer to silence and a hang-up. Ended while it rings.
        job.end.failed = True
        logger.error("call %s: %s; ending the call before it is answered", call_id, refused)
        await fail_call(ctx, room_name, f"the agent failed: {refused}; ended before an answer")
        ctx.shutdown(reason="the agent failed")
        return
    callee = waiting.result()
    if callee is None and job.end.failed:  # the session failed meanwhile: that ends the call
        return
    if callee is None:
        logger.info("call %s: not answered; ending the job", call_id)
        await end_room(ctx, room_name)
        ctx.shutdown(reason="callee did not answer")
        return
    answered_at = time.time()
    job.end.answered = True
    job.recorder.start(answered_at)
    job.sender.answered(answered_at)
    await handle_answer(
        session,
        agent,
        control,
        on_verdict=job.sender.amd,
        llm=session.llm if isinstance(session.llm, LLM) else None,
        participant_identity=callee.identity,
        detection_options=AMD_OPTIONS,
    )


async def key_refused_while(
    waiting: asyncio.Future[rtc.RemoteParticipant | None], session: AgentSession[None]
) -> str | None:
    """What refused the agent's API key (`tts (cartesia) refused its API key (APIStatusError
    401)`), if Cartesia or OpenAI did (`key_refused` of the agent's own plugins) before
    `waiting` (the wait for the answer) is done, which is then cancelled; else None."""
    parts = [
        (part, plugin)
        for part, plugin in (("tts", session.tts), ("llm", session.llm))
        if isinstance(plugin, CartesiaTTS | CallLLM)
    ]
    refusals = [asyncio.ensure_future(plugin.key_refused.wait()) for _, plugin in parts]
    either: set[asyncio.Future[Any]] = {waiting, *refusals}
    try:
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the job ends: no wait is left behind
        waiting.cancel()
        raise
    finally:
        for refusal in refusals:
            refusal.cancel()
    if waiting.done():
        return None
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    for part, plugin in parts:
        if plugin.key_refused.is_set():
            named = f"{part}{provider_named(plugin.label)}"
            return f"{named} refused its API key ({failure_name(plugin.refusal)})"
    return None


def _session_closed(ctx: JobContext, job: _Job, event: CloseEvent) -> None:
    """The session closed: the call and the job end with it (the callee hung up, the agent
    did, or a provider's error closed it).

    The worker deletes the room itself. Closed on an error, that is the agent failing, not
    the server hanging up, and the callee may still be on the line: the failure is recorded
    on the room first, so the call's outcome says why, then the room is deleted as for any
    failure (`fail_call`: tried again, an ERROR naming the call if it cannot;
    RoomOptions.delete_room_on_close made one attempt, racing the record, a failure only a
    WARNING, and the callee stayed on the line with nobody). Otherwise the callee left or
    the call was ended already, and the deletion is cleanup: one attempt, as before."""
    ending: Coroutine[object, object, object]
    error = event.error
    if event.reason != CloseReason.ERROR and isinstance(job.session, CallSession):
        error = job.session.failure  # the callee hung up on the apology: failed all the same
    if event.reason == CloseReason.ERROR or error is not None:
        job.end.failed = True
        what = (
            f"{error.type.removesuffix('_error')}{provider_named(error.label)}"
            f" {failure_name(error.error)}"
            if error is not None
            else "unknown"
        )
        logger.error(
            "call %s: the session closed on an error (%s); the call ends", job.call_id, what
        )
        reason = f"the agent's session failed: {what}"
        # Not the apology said after the failure (`CallSession`): what the call was for.
        spoke = (
            job.recorder.agent_spoke_before(error.timestamp)
            if error is not None
            else job.recorder.agent_spoke
        )
        ending = fail_call(ctx, job.call_id, reason, job.end.outcome, spoke=spoke)
    else:  # the callee left, or the call was ended already: the room goes, as cleanup
        ending = _delete_room_once(ctx, job.call_id)
    if job.hang_up is None:
        job.hang_up = asyncio.get_running_loop().create_task(ending)
    else:
        ending.close()
    ctx.shutdown(reason="session closed")


async def _delete_room_once(ctx: JobContext, room_name: str) -> None:
    """Delete a room nobody waits on any more (one attempt, a failure a WARNING): what
    RoomOptions.delete_room_on_close did when the session closed."""
    if ctx.is_fake_job():
        return
    try:
        await _delete_room(ctx, room_name)
    except api.TwirpError as exc:
        if exc.code != api.TwirpErrorCode.NOT_FOUND:
            logger.warning("call %s: deleting its room failed (%s)", room_name, exc.code)
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.warning("call %s: deleting its room failed (%s)", room_name, type(exc).__name__)


def provider_named(label: str) -> str:
    """The provider a plugin's error label names, as " (cartesia)" for
    'livekit.plugins.cartesia.tts.TTS': the call's reason and the log say which provider
    failed, not only which part ("tts"); "" for a label that names none."""
    parts = label.split(".")
    if len(parts) > 2 and parts[:2] == ["livekit", "plugins"] and parts[2].isidentifier():
        return f" ({parts[2]})"
    return ""


def failure_name(error: BaseException | None) -> str:
    """How a failure is named in the room's outcome reason: its type, and its HTTP status
    when a provider answered with one (`APIStatusError 401`); never its message (which may
    quote what was said, or a URL). The plugins give a provider's websocket that closed
    under them (Cartesia's, Deepgram's) its close code as the status, or -1 when it had
    none: `APIStatusError 1011` and `APIStatusError -1` read as HTTP statuses there were
    not. A close code is said as one (`APIStatusError: connection closed, code 1011`), and
    no status (-1) is not said."""
    if error is None:
        return "unknown"
    name = type(error).__name__
    status = getattr(error, "status_code", None)
    if not isinstance(status, int) or isinstance(status, bool):
        return name
    if 100 <= status <= 599:
        return f"{name} {status}"
    if 1000 <= status <= 4999:
        return f"{name}: connection closed, code {status}"
    return name


class CallAgentServer(AgentServer):
    """AgentServer that remembers why its run failed.

    livekit-agents' CLI logs a worker that fails (LiveKit unreachable, or refusing the API
    key, for its 16 attempts) as 'worker failed' and exits 0: a supervisor that restarts
    failed workers (systemd's Restart=on-failure, Docker's on-failure) left it down, and
    every call from then on rang with no agent (`run_worker` makes that exit code 1)."""

    failure: str | None = None
    spool: ReportSpool | None = None
    """Reports its jobs could not deliver: sent again while the worker runs."""

    async def run(self, *, devmode: bool = False, unregistered: bool = False) -> None:
        resending = None
        if self.spool is not None:
            resending = asyncio.get_running_loop().create_task(
                resend_loop(self.spool, self._api_key, self._api_secret), name="report-spool"
            )
        try:
            await super().run(devmode=devmode, unregistered=unregistered)
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {clip_for_log(str(exc))}"
            raise
        finally:
            if resending is not None:
                resending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await resending


def build_server(settings: Settings) -> CallAgentServer:
    """The worker: explicit dispatch under AGENT_NAME, credentials from settings."""
    server = CallAgentServer(
        ws_url=settings.livekit_url,
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        # The job's shutdown callback analyses the call and retries its reports: give the
        # process that long before it is killed (the default is 10 s).
        shutdown_process_timeout=SHUTDOWN_PROCESS_TIMEOUT_S,
        drain_timeout=drain_timeout_s(settings),
        # livekit-agents' health/status server (port 8081 in production) listens on every
        # interface by default; like the server, loopback unless told otherwise.
        host=settings.agent_http_host,
    )
    server.rtc_session(entrypoint, agent_name=settings.agent_name, on_request=request_job)
    server.spool = ReportSpool(settings.agent_report_spool_dir, max_age_s=spool_max_age_s(settings))
    return server


# How long a stopping worker waits for its live calls at least (livekit-agents' default).
DRAIN_TIMEOUT_S = 3600


def drain_timeout_s(settings: Settings) -> int:
    """How long a stopping worker (SIGTERM) waits for its live calls to end before its jobs
    are stopped: an hour, or CALL_MAX_DURATION_S when longer. livekit-agents' hour cut a call
    CALL_MAX_DURATION_S let go on (up to 86,400 s) mid-sentence at every deploy."""
    return max(DRAIN_TIMEOUT_S, settings.call_max_duration_s)


def spool_max_age_s(settings: Settings) -> float:
    """How long the worker keeps a job's undelivered reports: CALL_DATA_RETENTION_DAYS, at
    least an hour (a call's final report counts within 10 minutes of its end)."""
    return max(settings.call_data_retention_days * 86400, 3600.0)


# The exit code of a worker that stopped because it failed (not on a signal, nor on usage).
EXIT_WORKER_FAILED = 1


def run_worker(settings: Settings) -> int:
    """Hand over to livekit-agents' CLI (it reads the command from sys.argv); the exit code:
    its own, or EXIT_WORKER_FAILED, with one line on stderr, when the worker failed."""
    from livekit.agents import cli

    export_for_job_processes(settings, os.environ)
    server = build_server(settings)
    code: object = 0
    try:
        cli.run_app(server)
    except SystemExit as exc:  # the CLI exits, 0 even when the worker failed
        code = exc.code
    if server.failure is not None and code in (0, None):
        hint = (
            " (check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET)"
            if "connect to livekit" in server.failure
            else ""
        )
        print(f"agent: the worker stopped: {server.failure}{hint}", file=sys.stderr)
        return EXIT_WORKER_FAILED
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # as SystemExit("text") does
    return 1
