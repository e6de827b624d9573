"""The voice agent for one outbound call, and the narrow interface it uses to end the call.

`OutboundCaller` talks; `CallControl` is everything it may do to the call itself (record an
outcome on the room, hang up). The worker passes a LiveKit-backed control; tests pass a fake,
so the tools run offline.

The caller does not answer the callee before it has greeted them: while the answering-machine
detection listens, the callee's "Hello?" would otherwise get an LLM reply that plays before
(or instead of) the greeting. Until `greet` runs, a finished user turn is kept in the
agent's context (so the LLM sees it later) and its reply is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from livekit.agents import (
    Agent,
    FlushSentinel,
    ModelSettings,
    RunContext,
    StopResponse,
    UserStateChangedEvent,
    function_tool,
)
from livekit.agents.llm import (
    ChatChunk,
    ChatContext,
    ChatItem,
    ChatMessage,
    FunctionCall,
    FunctionCallOutput,
    Tool,
)
from livekit.agents.voice import SpeechHandle

from agent.apology import apology_for
from agent.plan import SessionPlan, answer_action
from common.config_store.model import LANGUAGES
from common.contracts import OUTCOME_CALLEE_SILENT, OUTCOME_NONE, OUTCOME_VOICEMAIL

logger = logging.getLogger(__name__)

# How long the callee and the agent may both be silent before the agent asks whether the
# callee is still there (livekit-agents' user_away_timeout: the user is "away"), and how long
# the callee may then stay silent before the agent says goodbye and ends the call.
CALLEE_SILENT_S = 15.0

# How long after the greeting the LLM may still find the line to be an answering machine
# (its detected_answering_machine tool). A voicemail box the detector took for a person
# finishes its greeting and beeps well within it, then records silence, which the silence
# check above ends; later, the callee has been talking with the agent. A callee who said "this
# is my voicemail, leave a message after the beep" five minutes into a conversation (or an
# LLM misreading "leave me a message") had a call that was talked through settled
# `voicemail`: a campaign retrying voicemail called them again, and they were read the
# call's voicemail message.
VOICEMAIL_TOOL_WINDOW_S = 60.0

# How much of the conversation each LLM request carries besides the agent's instructions
# (always sent): its latest MAX_CONTEXT_ITEMS items (a turn of either side, a tool call, its
# result), fewer if they exceed MAX_CONTEXT_CHARS of text. The whole history was sent with
# every request: at turn 400 of a long call, 800 messages (87 KB) a request and growing, the
# cost of input tokens growing with the square of the call's length, and past the model's
# context window every reply failing (the callee heard the apology, then the line drop).
# 100 items are the last 50 exchanges or so, several minutes of conversation.
MAX_CONTEXT_ITEMS = 100
MAX_CONTEXT_CHARS = 40_000
# The earliest items are left out CONTEXT_STEP at a time (a request carries between
# MAX_CONTEXT_ITEMS - CONTEXT_STEP + 1 and MAX_CONTEXT_ITEMS of them), not one by one: the
# beginning of the requests then stays the same for CONTEXT_STEP / 2 exchanges, which
# OpenAI's prompt caching serves (cheaper input tokens, a faster reply); moved at every turn,
# only the instructions were ever the same.
CONTEXT_STEP = 40


class CallControl(Protocol):
    """What the agent may do to its call besides talking."""

    async def set_outcome(self, outcome: str) -> None:
        """Record how the call ended on the room, so the room_finished webhook carries it."""
        ...

    async def hang_up(self) -> None:
        """End the call for everyone (the room is deleted, the phone line drops)."""
        ...

    def do_not_call(self) -> None:
        """Put the callee's number on the do-not-call list (reported to the server)."""
        ...


class OutboundCaller(Agent):
    """Speaks for one call: its instructions, the callee's name and language come from a plan."""

    def __init__(
        self,
        plan: SessionPlan,
        control: CallControl,
        *,
        on_held_turn: Callable[[ChatMessage], bool] | None = None,
    ) -> None:
        super().__init__(instructions=plan.instructions)
        self._plan = plan
        self._control = control
        self._hangup_task: asyncio.Task[None] | None = None
        self._hangup_scheduled = False
        self._greeted = False
        self._greeted_at: float | None = None  # time.monotonic() of the greeting
        self._on_held_turn = on_held_turn
        self._asked_if_there = False  # since the callee last spoke
        self._silence_ends: asyncio.Task[None] | None = None
        self._apologising = False
        self._apology: SpeechHandle | None = None
        self._reached_machine = False  # the LLM found a voicemail box (its tool)
        self._context_cut_logged = False
        self._asked_not_to_call = False  # the callee asked not to be called (its tool)
        # The LLM reply whose voicemail tool put its outcome on the room, no do-not-call
        # request seen by then: one in that reply takes it back.
        self._machine_reply: SpeechHandle | None = None
        self._machine_message: SpeechHandle | None = None  # the voicemail message it left
        self._hang_up_on: SpeechHandle | None = None  # the speech the hang-up waits for
        self._ended_by_end_call = False  # the call's end claimed by the LLM's end_call

    @property
    def greeted(self) -> bool:
        return self._greeted

    @property
    def reached_machine(self) -> bool:
        """Whether the LLM found the line to be an answering machine: nobody to apologise
        to (`agent.session.CallSession`), only a recording."""
        return self._reached_machine

    async def on_enter(self) -> None:
        self.session.on("user_state_changed", self.on_user_state)

    async def on_exit(self) -> None:
        if self._silence_ends is not None:  # the call is over: no goodbye to say
            self._silence_ends.cancel()

    def on_user_state(self, event: UserStateChangedEvent) -> None:
        """A callee silent for CALLEE_SILENT_S (the agent silent too) is asked once whether
        they are still there; silent as long again after the question, they are told
        goodbye and the call ends. The line stayed open until the call's max_duration_s
        (600 s by default) with nobody on it (a phone put down without hanging up, a
        voicemail box recording silence), its provider sessions and the trunk's minutes
        running all the while. Speaking again starts over."""
        if event.new_state == "speaking" or event.old_state == "away":
            # Out of "away" other than by speaking: a key pressed (RoomIO's DTMF) or words
            # the STT heard where its speech detection did not; the callee is there too.
            self._callee_spoke()
            return
        if (
            event.new_state != "away"
            or not self._greeted
            or self._hangup_scheduled
            or self._asked_if_there
        ):
            return
        self._asked_if_there = True
        logger.info(
            "call %s: the callee has said nothing for %.0f s; asking if they are there",
            self._plan.call_id,
            CALLEE_SILENT_S,
        )
        question = self.session.generate_reply(
            instructions=f"{self._plan.callee_as_data} has said nothing for a while. Ask them in"
            f" {LANGUAGES[self._plan.language]}, in a few words, whether they are still there."
            " Say nothing else."
        )
        self._silence_ends = asyncio.get_running_loop().create_task(self._end_if_silent(question))

    def _callee_spoke(self) -> None:
        """The callee is there: a later silence is asked about again, not ended at once."""
        self._asked_if_there = False
        if self._silence_ends is not None:
            self._silence_ends.cancel()
            self._silence_ends = None

    async def _end_if_silent(self, question: SpeechHandle) -> None:
        """Goodbye and hang-up once the callee has been silent CALLEE_SILENT_S after
        `question` (cancelled if they speak, the goodbye's hang-up too until it is said)."""
        await question.wait_for_playout()
        await asyncio.sleep(CALLEE_SILENT_S)
        if self._hangup_scheduled or not self._asked_if_there or self.session.user_state != "away":
            return
        logger.info(
            "call %s: the callee said nothing after being asked if they were there; ending the"
            " call",
            self._plan.call_id,
        )
        goodbye = self.session.generate_reply(
            instructions=f"{self._plan.callee_as_data} is still silent. Say a brief, polite"
            f" goodbye in {LANGUAGES[self._plan.language]}: you will call another time. Do"
            " not ask anything."
        )
        # Not _hang_up_after: a callee who speaks while the goodbye is written or said
        # ("Yes, sorry, I'm here") cancels this task and is answered, not hung up on when
        # the goodbye ends.
        self._hangup_scheduled = True
        try:
            await goodbye.wait_for_playout()
        except asyncio.CancelledError:
            self._hangup_scheduled = False
            goodbye.interrupt(force=True)  # not said to a callee who is there after all
            raise
        self._hangup_task = asyncio.get_running_loop().create_task(
            self._hang_up(OUTCOME_CALLEE_SILENT)
        )

    def greet(self) -> SpeechHandle:
        """Open the conversation: the call's first message as is (TTS only, no LLM round
        trip), else an LLM greeting; from now on the callee's turns get replies."""
        if self._plan.first_message:
            handle = self.session.say(self._plan.first_message)
        else:
            handle = self.session.generate_reply(instructions=self._plan.greeting)
        self._greeted = True
        # The callee's silence counts from here. Found "away" before (the session starts as
        # the phone rings: a long ring, or the detector listening, outlasts CALLEE_SILENT_S),
        # they stayed so, livekit-agents saying it only once: a line silent from the answer
        # on (a phone put down, a voicemail box recording silence) was never asked about.
        self.session.reset_away_timer()
        self._greeted_at = time.monotonic()
        return handle

    def apologise(self) -> SpeechHandle:
        """Say the call's apology (`agent.apology`) by the TTS alone, after what is being
        said and not to be cut off: a provider failed for good and the call ends once it is
        said (`agent.session.CallSession`). From now on nothing else is said: the callee's
        turns get no reply, a silence no question, and a tool no goodbye."""
        self._apologising = True
        self._hangup_scheduled = True  # the call ends after the apology, not after a goodbye
        if self._silence_ends is not None:
            self._silence_ends.cancel()
        apology = self.session.say(apology_for(self._plan.language), allow_interruptions=False)
        self._apology = apology
        return apology

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        """Before the greeting, keep what the callee said but do not answer it; what was
        heard before the call was answered (ringback, a carrier's announcement) is dropped.
        While the agent apologises (`apologise`), what the callee says is kept in the
        transcript and not answered: the LLM asked for a reply may be what failed."""
        if self._apologising:
            if self._on_held_turn is not None:
                self._on_held_turn(new_message)
            raise StopResponse()
        if self._greeted:
            self._callee_spoke()
            return
        # StopResponse drops the turn from the session's history: hand it to the transcript,
        # which would otherwise never hear of it, and, if it counts, put it in the agent's own
        # context (the LLM sees it once the conversation starts).
        if self._on_held_turn is not None and not self._on_held_turn(new_message):
            raise StopResponse()
        ctx = self.chat_ctx.copy()
        ctx.items.append(new_message)
        await self.update_chat_ctx(ctx)
        raise StopResponse()

    async def llm_node(
        self, chat_ctx: ChatContext, tools: list[Tool], model_settings: ModelSettings
    ) -> AsyncGenerator[ChatChunk | str | FlushSentinel, None]:
        """The LLM's reply, as livekit-agents asks for it; one that says nothing (no word, no
        tool call: an empty completion, a content filter's, a reasoning model that spent
        its tokens) is a WARNING. The callee heard silence where a reply should be, and
        nothing told: a model answering every request so made every call mute, each
        `completed` with the callee's turns alone."""
        said = False
        sent = bounded_context(chat_ctx)
        if sent is not chat_ctx and not self._context_cut_logged:
            self._context_cut_logged = True
            logger.info(
                "call %s: the conversation is longer than the LLM is sent (%d items, %d"
                " characters): its earliest turns are left out from now on",
                self._plan.call_id,
                MAX_CONTEXT_ITEMS,
                MAX_CONTEXT_CHARS,
            )
        async for chunk in Agent.default.llm_node(self, sent, tools, model_settings):
            said = said or _says_something(chunk)
            yield chunk
        if not said:
            logger.warning(
                "call %s: the LLM (%s) answered with nothing to say; the callee heard nothing",
                self._plan.call_id,
                self._plan.llm.model,
            )

    @property
    def plan(self) -> SessionPlan:
        return self._plan

    @property
    def hangup_task(self) -> asyncio.Task[None] | None:
        """The running or finished hang-up, once one has started."""
        return self._hangup_task

    async def _hang_up(self, outcome: str | None = None) -> None:
        """End the call, first recording `outcome` on its room if given (its failure logged:
        the hang-up matters more)."""
        if outcome is not None:
            await self._record_outcome(outcome)
        try:
            await self._control.hang_up()
        except Exception:
            # Nothing left to tell the callee; the room's empty timeout ends the call anyway.
            logger.exception("call %s: hang-up failed", self._plan.call_id)

    async def _record_outcome(self, outcome: str) -> None:
        """Record `outcome` on the call's room; a failure is logged (the call goes on)."""
        try:
            await self._control.set_outcome(outcome)
        except Exception:
            logger.exception(
                "call %s: could not record the outcome %s",
                self._plan.call_id,
                outcome or "none (the voicemail taken back)",
            )

    async def _found_machine(self, reply: SpeechHandle) -> bool:
        """Record the call `voicemail` (the LLM's voicemail tool in `reply`); whether that
        stands. A do-not-call request in the same reply, run while the outcome went to
        LiveKit or after, takes it back (`_withdraw_machine`): left, the call of the person
        who had just asked not to be called settled `voicemail` ("answering machine"), its
        analysis skipped, and a campaign retrying voicemail took it for a machine."""
        self._reached_machine = True
        await self._record_outcome(OUTCOME_VOICEMAIL)
        if self._asked_not_to_call:
            await self._withdraw_machine()
            return False
        self._machine_reply = reply  # a do-not-call request in it from now on takes it back
        return True

    async def _withdraw_machine(self) -> None:
        """Take back the `voicemail` outcome the voicemail tool recorded: a person asked not
        to be called, no machine. The call settles as an answered one does."""
        logger.info(
            "call %s: the callee asked not to be called; the voicemail outcome is withdrawn",
            self._plan.call_id,
        )
        self._reached_machine = False
        self._machine_reply = None
        await self._record_outcome(OUTCOME_NONE)

    def _hang_up_after(self, speech: SpeechHandle) -> None:
        """Hang up once `speech` is over: the tool's reply (the goodbye) is part of it."""
        if self._hangup_scheduled:
            return
        self._hangup_scheduled = True
        self._hang_up_once_said(speech)

    def _hang_up_once_said(self, speech: SpeechHandle) -> None:
        """The hang-up after `speech`, the call's end already claimed (`_hangup_scheduled`);
        instead of after the speech it was waiting for, if any."""
        self._hang_up_on = speech

        def _on_done(_: SpeechHandle) -> None:
            if self._hang_up_on is not speech:  # to follow another speech since
                return
            # The goodbye's LLM request failed and the apology is on its way (it ends with
            # a goodbye): hung up at once, the callee heard "Sorry, we—" and the line drop.
            if self._apology is not None and not self._apology.done():
                self._apology.add_done_callback(_on_done)
                return
            self._hangup_task = asyncio.get_running_loop().create_task(self._hang_up())

        speech.add_done_callback(_on_done)

    @function_tool
    async def end_call(self, ctx: RunContext[None]) -> str:
        """End the phone call.

        Call this when the person says goodbye, asks to end the call, or the purpose of the
        call is fulfilled. Then say one short goodbye; the line is closed right after it.
        """
        logger.info("call %s: agent is ending the call", self._plan.call_id)
        if not self._hangup_scheduled:
            self._ended_by_end_call = True
        self._hang_up_after(ctx.speech_handle)
        return (
            f"Now say a brief, polite goodbye to {self._plan.callee_as_data} in "
            f"{LANGUAGES[self._plan.language]}. Do not ask anything else."
        )

    @function_tool
    async def add_to_do_not_call(self, ctx: RunContext[None]) -> str:
        """Put this person on the do-not-call list: they will not be called again.

        Call this when the person asks not to be called again, to be removed from the list,
        or to stop calling them. Then apologise briefly and say goodbye; the line is closed
        right after it.
        """
        logger.info("call %s: callee asked not to be called again", self._plan.call_id)
        self._asked_not_to_call = True
        self._control.do_not_call()
        self._hang_up_after(ctx.speech_handle)
        if ctx.speech_handle is self._machine_reply:  # its voicemail tool's, run before it
            message, self._machine_message = self._machine_message, None
            if message is not None and not message.done():
                # Begun (or queued) before this request ran: not read on to the person who
                # asked not to be called; the line closes after this reply instead.
                self._hang_up_once_said(ctx.speech_handle)
                message.interrupt(force=True)
            await self._withdraw_machine()
        return (
            f"The number is on the do-not-call list now. Tell {self._plan.callee_as_data} in "
            f"{LANGUAGES[self._plan.language]} that they will not be called again, apologise "
            "for the disturbance, and say goodbye. Do not ask anything else."
        )

    @function_tool
    async def detected_answering_machine(self, ctx: RunContext[None]) -> str | None:
        """Report that the call reached voicemail or an answering machine, not a person.

        Call this after hearing a voicemail greeting or beep. Say nothing yourself: the
        call's own voicemail message, if it has one, is left for you, then the line is
        closed.
        """
        talked_s = None if self._greeted_at is None else time.monotonic() - self._greeted_at
        in_window = talked_s is None or talked_s <= VOICEMAIL_TOOL_WINDOW_S
        if self._hangup_scheduled:
            if (
                self._ended_by_end_call
                and not self._asked_not_to_call
                and not self._reached_machine
                and in_window
            ):
                # After end_call in one reply: the LLM found a machine and ended the call.
                # The line closes after end_call's goodbye (no voicemail message begun over
                # it), and the call is the voicemail it is (a campaign retries those), not a
                # conversation `completed` with no reason. Not after a do-not-call request
                # (end_call, add_to_do_not_call, this tool): a person asked, no machine.
                logger.info("call %s: answering machine detected as it ends", self._plan.call_id)
                await self._found_machine(ctx.speech_handle)
                return None
            # Called with add_to_do_not_call in one reply, or twice: the call is ending. Taken,
            # it recorded `voicemail` on a call a do-not-call request was ending, read the
            # voicemail message to the person who had asked not to be called, or began the
            # message twice.
            logger.info(
                "call %s: the LLM found an answering machine as the call ends; not taken",
                self._plan.call_id,
            )
            return None
        if not in_window:
            logger.info(
                "call %s: the LLM found an answering machine %.0f s into the conversation;"
                " not taken (a machine's greeting is over by %.0f s): the call goes on",
                self._plan.call_id,
                talked_s,
                VOICEMAIL_TOOL_WINDOW_S,
            )
            return (
                "Not recorded: this call has been a conversation for over"
                f" {VOICEMAIL_TOOL_WINDOW_S:.0f} seconds, so the line is not an answering"
                f" machine. Go on with the conversation with {self._plan.callee_as_data} in"
                f" {LANGUAGES[self._plan.language]}."
            )
        logger.info("call %s: answering machine detected", self._plan.call_id)
        # The call's end is this tool's from here, before the outcome's request to LiveKit: a
        # tool called with it in one reply (end_call, add_to_do_not_call) runs while that
        # request is on its way, and its hang-up is not taken (hung up after the message).
        self._hangup_scheduled = True
        if not await self._found_machine(ctx.speech_handle):
            # add_to_do_not_call after this tool in the same reply, run meanwhile: as when it
            # comes first, the person who asked not to be called is not read the voicemail
            # message; the line closes after its reply (the apology and goodbye).
            logger.info(
                "call %s: the callee asked not to be called as the LLM found an answering"
                " machine; the voicemail message is not left",
                self._plan.call_id,
            )
            self._hang_up_once_said(ctx.speech_handle)
            return None
        # The call's voicemail policy, as for the detector's verdict (agent.answer): its own
        # message, said as written, or none (hang_up). No reply from the LLM: it improvised
        # a message on every voicemail box it recognised, one the call said not to leave.
        voicemail = self._plan.voicemail
        if answer_action("machine-vm", voicemail) == "leave_message" and voicemail.message:
            logger.info("call %s: leaving the voicemail message", self._plan.call_id)
            self._machine_message = self.session.say(voicemail.message, allow_interruptions=False)
            self._hang_up_once_said(self._machine_message)
        else:
            self._hang_up_once_said(ctx.speech_handle)
        return None


def bounded_context(chat_ctx: ChatContext) -> ChatContext:
    """What an LLM request carries of `chat_ctx`: `chat_ctx` itself when its items fit
    within MAX_CONTEXT_ITEMS and MAX_CONTEXT_CHARS, else a copy of its latest items that
    fit, after the agent's instructions (`ChatContext.truncate` keeps them, and leaves out
    a tool's result whose call it cut). Past MAX_CONTEXT_ITEMS, the earliest are left out
    CONTEXT_STEP at a time. The characters never leave out the latest turn of either side:
    a long one before a tool's call and result left them alone to be kept, and truncate
    (no request leads with a tool's items) sent the instructions and nothing else."""
    items = chat_ctx.items
    first = items[0] if items else None
    instructions = isinstance(first, ChatMessage) and first.role in ("system", "developer")
    conversation = items[1:] if instructions else items
    kept = chars = 0
    said = False  # a turn of the callee or the agent is among the kept items
    for item in reversed(conversation):
        chars += _chars_of(item)
        if kept == MAX_CONTEXT_ITEMS or (chars > MAX_CONTEXT_CHARS and said):
            break
        kept += 1
        said = said or (isinstance(item, ChatMessage) and item.role in ("user", "assistant"))
    if kept == len(conversation):
        return chat_ctx
    if kept == MAX_CONTEXT_ITEMS:  # not cut by the characters: by steps
        left_out = -(-(len(conversation) - MAX_CONTEXT_ITEMS) // CONTEXT_STEP) * CONTEXT_STEP
        kept = len(conversation) - left_out
    return chat_ctx.copy().truncate(max_items=kept)


def _chars_of(item: ChatItem) -> int:
    """The text an item of the conversation puts in an LLM request."""
    if isinstance(item, ChatMessage):
        return len(item.text_content or "")
    if isinstance(item, FunctionCall):
        return len(item.name) + len(item.arguments)
    if isinstance(item, FunctionCallOutput):
        return len(item.output)
    return 0


def _says_something(chunk: ChatChunk | str | FlushSentinel) -> bool:
    """Whether a piece of an LLM reply holds words to say or a tool call."""
    if isinstance(chunk, str):
        return bool(chunk.strip())
    if isinstance(chunk, ChatChunk) and chunk.delta is not None:
        return bool((chunk.delta.content or "").strip() or chunk.delta.tool_calls)
    return False
