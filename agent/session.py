"""The real session for a plan: the Deepgram / OpenAI / Cartesia plugins, `AgentSession` and
`OutboundCaller` (needs the API keys; planning itself is `agent.plan`).

The plugins are imported on use, so planning (and `describe`) never loads livekit-agents; the
worker imports them up front because they must register on the main thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.caller import CallControl, OutboundCaller
from agent.plan import SessionPlan
from common.settings import Settings

if TYPE_CHECKING:
    from livekit.agents import AgentSession
    from livekit.agents.llm import ChatMessage
    from livekit.plugins import cartesia, deepgram, openai


def build_stt(plan: SessionPlan, settings: Settings) -> deepgram.STT:
    from livekit.plugins import deepgram

    return deepgram.STT(
        model=plan.stt.model, language=plan.stt.language, api_key=settings.deepgram_api_key
    )


def build_llm(plan: SessionPlan, settings: Settings) -> openai.LLM:
    from livekit.plugins import openai

    return openai.LLM(model=plan.llm.model, api_key=settings.openai_api_key)


def build_tts(plan: SessionPlan, settings: Settings) -> cartesia.TTS:
    from livekit.plugins import cartesia

    return cartesia.TTS(
        model=plan.tts.model,
        language=plan.tts.language,
        emotion=plan.tts.emotion,
        voice=plan.tts.voice,
        word_timestamps=plan.tts.word_timestamps,
        api_key=settings.cartesia_api_key,
    )


def build_agent(
    plan: SessionPlan,
    control: CallControl,
    *,
    on_held_turn: Callable[[ChatMessage], None] | None = None,
) -> OutboundCaller:
    return OutboundCaller(plan, control, on_held_turn=on_held_turn)


def build_session(
    plan: SessionPlan,
    settings: Settings,
    control: CallControl,
    *,
    on_held_turn: Callable[[ChatMessage], None] | None = None,
) -> tuple[AgentSession[None], OutboundCaller]:
    """The real session and agent for a plan (needs the API keys).

    Building it already starts pre-warming the LLM connection (livekit-agents does this).
    `on_held_turn` gets the callee's turns the agent holds back before its greeting.
    """
    from livekit.agents import AgentSession

    session: AgentSession[None] = AgentSession(
        stt=build_stt(plan, settings),
        llm=build_llm(plan, settings),
        tts=build_tts(plan, settings),
    )
    return session, build_agent(plan, control, on_held_turn=on_held_turn)
