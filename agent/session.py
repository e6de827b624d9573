"""The real session for a plan: the Deepgram / OpenAI / Cartesia plugins, `AgentSession` and
`OutboundCaller` (needs the API keys; planning itself is `agent.plan`).

The plugins are imported on use, so planning (and `describe`) never loads livekit-agents; the
worker imports them up front because they must register on the main thread.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import AgentSession, ConversationItemAddedEvent
from livekit.agents.llm import ChatMessage, LLMError, RealtimeModelError
from livekit.agents.stt import STTError
from livekit.agents.tts import TTSError
from livekit.agents.voice import SpeechHandle

from agent import caller
from agent.caller import CallControl, OutboundCaller
from agent.plan import SessionPlan
from common.settings import Settings

if TYPE_CHECKING:
    import openai as openai_sdk
    from livekit.agents import APIConnectOptions
    from livekit.agents.llm import ChatMessage
    from livekit.agents.voice.agent_session import SessionConnectOptions
    from livekit.plugins import cartesia, deepgram, openai


def build_stt(plan: SessionPlan, settings: Settings) -> deepgram.STT:
    from livekit.plugins import deepgram

    return deepgram.STT(
        model=plan.stt.model,
        language=plan.stt.language,
        api_key=settings.deepgram_api_key,
        # Deepgram keeps a request's audio and transcript to train its models unless told
        # not to (mip_opt_out): a callee's voice, heard without their agreement to that.
        mip_opt_out=settings.deepgram_mip_opt_out,
    )


def build_llm(plan: SessionPlan, settings: Settings) -> openai.LLM:
    # OpenAI's plugin, whose requests without options (the answering-machine detector's)
    # are bounded as the session's are.
    from agent.openai_llm import CallLLM

    client = openai_client(settings.openai_api_key, settings.openai_base_url)
    return CallLLM(
        model=plan.llm.model,
        client=client,
        conn_options=speech_conn_options(),
        call_id=plan.call_id,
    )


# One OpenAI client per agent process (per event loop: an httpx client's connections belong
# to the loop that opened them), shared by its jobs. `openai.LLM` would otherwise build a new
# httpx client for every job, and with it a TLS context that loads the CA bundle: ~20 ms of a
# job's start. A shared client is not closed with a job's LLM (the LLM does not own it).
_OPENAI_CLIENTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[tuple[str | None, str | None], openai_sdk.AsyncClient]
] = weakref.WeakKeyDictionary()


# OpenAI's own endpoint, given to the SDK when OPENAI_BASE_URL is not set: given None, the SDK
# reads the environment's OPENAI_BASE_URL itself, and an empty one (`OPENAI_BASE_URL=` in a
# compose file, which to Settings means the default) became its base URL: every LLM request
# of every call failed ("missing an 'http://' or 'https://' protocol").
OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def openai_client(api_key: str | None, base_url: str | None = None) -> openai_sdk.AsyncClient:
    """The process's OpenAI client, configured as `openai.LLM` configures its own, for the
    endpoint at `base_url` (Settings.openai_base_url, which read OPENAI_BASE_URL; None:
    OpenAI's)."""
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a synchronous caller): nothing to share it with
        loop = None
    if loop is not None and loop in _OPENAI_CLIENTS:
        key, client = _OPENAI_CLIENTS[loop]
        if key == (api_key, base_url):
            return client
    import httpx2 as httpx
    import openai as openai_sdk

    client = openai_sdk.AsyncClient(
        api_key=api_key,
        base_url=base_url or OPENAI_DEFAULT_BASE_URL,
        max_retries=0,
        http_client=httpx.AsyncClient(
            timeout=httpx.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
            follow_redirects=True,
            limits=httpx.Limits(
                max_connections=50, max_keepalive_connections=50, keepalive_expiry=120
            ),
        ),
    )
    if loop is not None:
        _OPENAI_CLIENTS[loop] = ((api_key, base_url), client)
    return client


def build_tts(plan: SessionPlan, settings: Settings) -> cartesia.TTS:
    # Cartesia's plugin, whose refusals (credits, limits, an unknown voice) are said.
    from agent.cartesia_tts import CartesiaTTS

    return CartesiaTTS(
        model=plan.tts.model,
        language=plan.tts.language,
        emotion=plan.tts.emotion,
        voice=plan.tts.voice,
        word_timestamps=plan.tts.word_timestamps,
        api_key=settings.cartesia_api_key,
    )


# How long the LLM (OpenAI) or the TTS (Cartesia) may keep the callee waiting for a reply's
# speech: each attempt may go PROVIDER_TIMEOUT_S without a byte (the plugins give it to their
# requests, over the OpenAI client's own read timeout), and is tried PROVIDER_RETRIES more
# times, PROVIDER_RETRY_INTERVAL_S apart. livekit-agents' defaults (10 s, 3 more, 2 s apart)
# left the callee in silence for 44 s when a provider took the request and never answered.
# The same retries ride out a refusal (a 429, a 500): livekit-agents retries the first at
# once (0.1 s), the next PROVIDER_RETRY_INTERVAL_S later. At 1 s apart, a rate limit of 1.5 s
# (OpenAI's tokens per minute: "Please try again in 1.5s") ended the call 1.1 s after it
# began; 2 s apart, one of up to 2.1 s is ridden out, for 1 s more of a silent provider's.
PROVIDER_TIMEOUT_S = 5.0
PROVIDER_RETRIES = 2
PROVIDER_RETRY_INTERVAL_S = 2.0


# How long the agent waits to ask again when OpenAI or Cartesia refuses its API key (401, or
# Cartesia's 403) to the connection the session makes ahead, while the phone rings: refused
# twice, the call is ended before it is answered (agent.worker.key_refused_while). Taken at
# its first word, a refusal of a moment (a provider's auth service blinking, a key rotated a
# second late) ended a call that would have worked, its callee's phone ringing off.
KEY_REFUSAL_RECHECK_S = 1.0


def speech_conn_options() -> APIConnectOptions:
    """How long the LLM or the TTS may keep the callee waiting: PROVIDER_TIMEOUT_S an
    attempt, PROVIDER_RETRIES more, PROVIDER_RETRY_INTERVAL_S apart."""
    from livekit.agents import APIConnectOptions

    return APIConnectOptions(
        max_retry=PROVIDER_RETRIES,
        retry_interval=PROVIDER_RETRY_INTERVAL_S,
        timeout=PROVIDER_TIMEOUT_S,
    )


def session_connect_options() -> SessionConnectOptions:
    """End the session on a provider's first request that failed for good (after the
    plugin's own retries): that speech (the greeting, a reply) never reaches the callee.
    livekit-agents' default tolerates three in a row, and the callee sat in silence while
    they happened; closed on the error, the session ends the call (the worker records why,
    hangs up and reports the call ended by the system). A provider that does not answer
    gives up within about 17 s (PROVIDER_TIMEOUT_S and its retries)."""
    from livekit.agents.voice.agent_session import SessionConnectOptions

    speech = speech_conn_options()
    return SessionConnectOptions(
        llm_conn_options=speech, tts_conn_options=speech, max_unrecoverable_errors=0
    )


# How long the apology may take to be said once its turn comes (a TTS that takes it and
# sends nothing gives up within about 17 s, PROVIDER_TIMEOUT_S and its retries) before the
# call ends without it.
APOLOGY_TIMEOUT_S = 12.0
# How long what the agent is saying when the provider fails may go on before it is cut for
# the apology: the words of a reply received before OpenAI's stream was cut (it streams far
# faster than they are said), a reply being said when Deepgram is lost. Counted in
# APOLOGY_TIMEOUT_S, a reply with more than a few seconds left to say had the apology cut
# short or never said, and the call closed in the middle of the reply's sentence.
APOLOGY_WAITS_S = 8.0

logger = logging.getLogger(__name__)

SessionError = LLMError | STTError | TTSError | RealtimeModelError


class CallSession(AgentSession[None]):
    """The call's `AgentSession`, which apologises before it closes on a provider's failure.

    livekit-agents closes the session on a provider's first request that failed for good
    (`session_connect_options`), and the worker ends the call on that close. In the middle of
    a conversation (OpenAI answering 500 past the retries, refusing a key rotated away, its
    stream cut halfway through a reply; Deepgram's stream lost), the callee heard nothing
    more, then the line went dead. Once the agent has greeted, such a failure of the LLM or
    the STT is met with the call's fixed apology (`OutboundCaller.apologise`, TTS only),
    and the session closes on it once the apology is said (after what is being said,
    APOLOGY_WAITS_S at most, then APOLOGY_TIMEOUT_S at most), as
    before: the same error, the same close. The TTS failing leaves nothing to say it with:
    the session closes at once, as before, and a TTS failing during the apology cuts it
    short. `failure` is the error being apologised for: the callee who hangs up meanwhile
    closes the session without it (`agent.worker` records it all the same)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.failure: SessionError | None = None
        self._apology: SpeechHandle | None = None
        self._cut: SpeechHandle | None = None  # what was being said when the LLM failed
        self._ending: asyncio.Task[None] | None = None
        # Before anyone else's handler (the worker's transcript): the reply the LLM's
        # failure cut short is said to be interrupted when it is added.
        self.on("conversation_item_added", self._mark_cut_reply)

    def _mark_cut_reply(self, event: ConversationItemAddedEvent) -> None:
        """The agent's reply whose stream the LLM's failure cut (OpenAI's connection lost
        halfway through it) is added once its words so far are said, as a whole turn:
        the transcript showed the callee's half sentence as all the agent meant to say. It
        is `interrupted`, as a reply the callee cut off is."""
        item, failure = event.item, self.failure
        if (
            isinstance(failure, LLMError)
            and isinstance(item, ChatMessage)
            and item.role == "assistant"
            and (
                item.created_at < failure.timestamp
                # Made once its stream had failed (the failure right after its last words:
                # OpenAI's stream ending early, or cut at once): the speech that was being
                # said then is still being said (its item is added before it is done).
                or (self._cut is not None and self._cut is self.current_speech)
            )
            and (self._apology is None or item not in self._apology.chat_items)
        ):
            item.interrupted = True

    def _on_error(self, error: SessionError) -> None:
        if self._closing_task is not None or error.recoverable:
            super()._on_error(error)
            return
        if self._apology is not None:  # once: a later failure is part of the same end
            if isinstance(error, TTSError):
                self._apology.interrupt(force=True)  # nothing can say it: end now
            return
        agent = self._agent
        if (
            not isinstance(error, LLMError | STTError)
            or not isinstance(agent, caller.OutboundCaller)
            or not agent.greeted
            or agent.reached_machine  # a voicemail box records it: the message ends as before
        ):
            super()._on_error(error)
            return
        self._cut = self.current_speech if isinstance(error, LLMError) else None
        try:
            self._apology = agent.apologise()
        except RuntimeError:  # the session is no longer running: nothing can be said
            super()._on_error(error)
            return
        self.failure = error
        logger.warning(
            "call %s: the %s failed for good; apologising to the callee before the call ends",
            agent.plan.call_id,
            error.type.removesuffix("_error"),
        )
        self._ending = asyncio.get_running_loop().create_task(
            self._close_after(self._apology, error, agent.plan.call_id)
        )

    async def _close_after(
        self, apology: SpeechHandle, error: SessionError, call_id: str | None
    ) -> None:
        """Close on `error` (as livekit-agents would have at once) once `apology` is said:
        what is being said before it goes on APOLOGY_WAITS_S at most (then it is cut), and
        the apology, once its turn comes, APOLOGY_TIMEOUT_S at most."""
        said = asyncio.ensure_future(apology.wait_for_playout())
        begun = asyncio.ensure_future(apology._wait_for_authorization())
        try:
            await asyncio.wait(
                {said, begun}, timeout=APOLOGY_WAITS_S, return_when=asyncio.FIRST_COMPLETED
            )
            ahead = self.current_speech
            if not begun.done() and not said.done() and ahead is not None and ahead is not apology:
                logger.info(
                    "call %s: what the agent was saying is cut for the apology (%.0f s)",
                    call_id,
                    APOLOGY_WAITS_S,
                )
                ahead.interrupt(force=True)
            await asyncio.wait_for(said, APOLOGY_TIMEOUT_S)
        except TimeoutError:
            apology.interrupt(force=True)
            logger.warning(
                "call %s: the apology was not said within %.0f s; the call ends",
                call_id,
                APOLOGY_TIMEOUT_S,
            )
        finally:
            begun.cancel()
            said.cancel()
        if self._closing or not self._started:
            # Closing or closed meanwhile (the callee hung up on the apology): the failure
            # is the call's all the same (`failure`), and closing again logged
            # livekit-agents' ERROR "closing due to unrecoverable error" for a session
            # already closing.
            return
        super()._on_error(error)


def build_agent(
    plan: SessionPlan,
    control: CallControl,
    *,
    on_held_turn: Callable[[ChatMessage], bool] | None = None,
) -> OutboundCaller:
    return OutboundCaller(plan, control, on_held_turn=on_held_turn)


def build_session(
    plan: SessionPlan,
    settings: Settings,
    control: CallControl,
    *,
    on_held_turn: Callable[[ChatMessage], bool] | None = None,
) -> tuple[CallSession, OutboundCaller]:
    """The real session and agent for a plan (needs the API keys).

    Building it already starts pre-warming the LLM connection (livekit-agents does this).
    `on_held_turn` gets the callee's turns the agent holds back before its greeting, and says
    whether they count (False: heard before the call was answered).
    """
    session = CallSession(
        stt=build_stt(plan, settings),
        llm=build_llm(plan, settings),
        tts=build_tts(plan, settings),
        conn_options=session_connect_options(),
        user_away_timeout=caller.CALLEE_SILENT_S,  # then OutboundCaller.on_user_state
    )
    return session, build_agent(plan, control, on_held_turn=on_held_turn)
