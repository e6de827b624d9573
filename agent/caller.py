"""The voice agent for one outbound call, and the narrow interface it uses to end the call.

`OutboundCaller` talks; `CallControl` is everything it may do to the call itself (record an
outcome on the room, hang up). The worker passes a LiveKit-backed control; tests pass a fake,
so the tools run offline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from livekit.agents import Agent, RunContext, function_tool
from livekit.agents.voice import SpeechHandle

from agent.plan import SessionPlan
from common.config_store.model import LANGUAGES
from common.contracts import OUTCOME_VOICEMAIL

logger = logging.getLogger(__name__)


class CallControl(Protocol):
    """What the agent may do to its call besides talking."""

    async def set_outcome(self, outcome: str) -> None:
        """Record how the call ended on the room, so the room_finished webhook carries it."""
        ...

    async def hang_up(self) -> None:
        """End the call for everyone (the room is deleted, the phone line drops)."""
        ...


class OutboundCaller(Agent):
    """Speaks for one call: its instructions, the callee's name and language come from a plan."""

    def __init__(self, plan: SessionPlan, control: CallControl) -> None:
        super().__init__(instructions=plan.instructions)
        self._plan = plan
        self._control = control
        self._hangup_task: asyncio.Task[None] | None = None
        self._hangup_scheduled = False

    @property
    def plan(self) -> SessionPlan:
        return self._plan

    @property
    def hangup_task(self) -> asyncio.Task[None] | None:
        """The running or finished hang-up, once one has started."""
        return self._hangup_task

    async def _hang_up(self) -> None:
        try:
            await self._control.hang_up()
        except Exception:
            # Nothing left to tell the callee; the room's empty timeout ends the call anyway.
            logger.exception("call %s: hang-up failed", self._plan.call_id)

    def _hang_up_after(self, speech: SpeechHandle) -> None:
        """Hang up once `speech` is over: the tool's reply (the goodbye) is part of it."""
        if self._hangup_scheduled:
            return
        self._hangup_scheduled = True

        def _on_done(_: SpeechHandle) -> None:
            self._hangup_task = asyncio.get_running_loop().create_task(self._hang_up())

        speech.add_done_callback(_on_done)

    @function_tool
    async def end_call(self, ctx: RunContext[None]) -> str:
        """End the phone call.

        Call this when the person says goodbye, asks to end the call, or the purpose of the
        call is fulfilled. Then say one short goodbye; the line is closed right after it.
        """
        logger.info("call %s: agent is ending the call", self._plan.call_id)
        self._hang_up_after(ctx.speech_handle)
        return (
            f"Now say a brief, polite goodbye to {self._plan.caller_name} in "
            f"{LANGUAGES[self._plan.language]}. Do not ask anything else."
        )

    @function_tool
    async def detected_answering_machine(self, ctx: RunContext[None]) -> str:
        """Report that the call reached voicemail or an answering machine, not a person.

        Call this after hearing a voicemail greeting or beep. Then leave one short message;
        the line is closed right after it.
        """
        logger.info("call %s: answering machine detected", self._plan.call_id)
        try:
            await self._control.set_outcome(OUTCOME_VOICEMAIL)
        except Exception:
            logger.exception("call %s: could not record the voicemail outcome", self._plan.call_id)
        self._hang_up_after(ctx.speech_handle)
        return (
            f"Leave a one-sentence voicemail for {self._plan.caller_name} in "
            f"{LANGUAGES[self._plan.language]}: who is calling and that you will try again "
            "later. Say nothing after it."
        )
