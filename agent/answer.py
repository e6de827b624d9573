"""Once the callee picks up: a person or a machine, and what the agent does about it.

livekit-agents' `AMD` listens to the first words (the session's own STT transcripts, our
own LLM: no LiveKit Inference) and holds the agent's speech until it has a verdict. Then
`plan.answer_action` decides: greet a person (or an uncertain line), leave the call's
message on a voicemail box that should get one, hang up on any other machine. The machine
outcomes are recorded on the room ("voicemail") before hanging up, so the server settles the
call as voicemail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, cast, get_args

from livekit.agents import AMD, AgentSession, APITimeoutError
from livekit.agents.llm import LLM, LLMError
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice.amd.classifier import AMDPredictionEvent
from livekit.agents.voice.amd.detector import DetectionOptions

from agent.caller import CallControl, OutboundCaller
from agent.plan import AnswerAction, answer_action
from common.contracts import OUTCOME_VOICEMAIL, AmdCategory, AmdVerdict

logger = logging.getLogger(__name__)

_CATEGORIES = frozenset(get_args(AmdCategory))


async def detect_machine(
    session: AgentSession[None],
    *,
    llm: LLM[Any] | None,
    participant_identity: str | None,
    detection_options: DetectionOptions | None = None,
) -> AmdVerdict | None:
    """The detector's verdict, or None when it gave none (the call ended, it failed).

    `llm=None` makes AMD use the session's LLM; `stt=None` the session's STT transcripts.
    Either way nothing but our own providers is called. IVR navigation stays off: the
    agent has no menu to get through.
    """
    classifier = llm if llm is not None else session.llm
    stalled = asyncio.Event()

    def on_llm_error(error: LLMError) -> None:
        if isinstance(error.error, APITimeoutError):
            stalled.set()

    if isinstance(classifier, LLM):
        classifier.on("error", on_llm_error)
    try:
        async with AMD(
            session,
            llm=llm,
            stt=None,
            participant_identity=participant_identity or NOT_GIVEN,
            ivr_detection=False,
            detection_options=detection_options or NOT_GIVEN,
            # Its "model ... hasn't been evaluated" WARNING came on every call; `agent start`
            # says it once instead (cli.start_warnings).
            suppress_compatibility_warning=True,
        ) as detector:
            result = await _unless_stalled(detector.execute(), stalled)
    except RuntimeError as exc:  # closed before a verdict: the call ended while listening
        logger.info("answering-machine detection gave no verdict: %s", exc)
        return None
    except Exception:
        logger.exception("answering-machine detection failed")
        return None
    finally:
        if isinstance(classifier, LLM):
            classifier.off("error", on_llm_error)
    if result is None:
        # The detector waits for its verdict up to its timeout (20 s), the callee who said
        # "Hello?" in silence all along: greeted now (the first message needs no LLM).
        logger.warning(
            "answering-machine detection: the LLM did not answer in time (it timed out);"
            " greeting without a verdict"
        )
        return None
    category = result.category.value
    logger.info(
        "answering-machine detection: %s (%s, %.1f s of speech)",
        category,
        result.reason,
        result.speech_duration,
    )
    return AmdVerdict(
        category=cast(AmdCategory, category) if category in _CATEGORIES else "uncertain",
        reason=result.reason[:200],
    )


async def _unless_stalled(
    execution: Coroutine[Any, Any, AMDPredictionEvent], stalled: asyncio.Event
) -> AMDPredictionEvent | None:
    """The detector's result, or None as soon as `stalled` is set (its LLM timed out)."""
    detecting = asyncio.ensure_future(execution)
    waiting = asyncio.ensure_future(stalled.wait())
    try:
        await asyncio.wait({detecting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        if not detecting.done():
            detecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await detecting
    return detecting.result() if not detecting.cancelled() else None


async def act_on_answer(action: AnswerAction, agent: OutboundCaller, control: CallControl) -> None:
    """Greet, or leave the voicemail message and hang up, or just hang up."""
    plan = agent.plan
    if action == "greet":
        try:
            agent.greet()
        except RuntimeError as exc:  # the session closed meanwhile: nobody left to greet
            logger.info("call %s: not greeting, the session is over (%s)", plan.call_id, exc)
        return
    try:
        await control.set_outcome(OUTCOME_VOICEMAIL)
    except Exception:
        logger.exception("call %s: could not record the voicemail outcome", plan.call_id)
    if action == "leave_message" and plan.voicemail.message:
        logger.info("call %s: leaving the voicemail message", plan.call_id)
        try:
            # The detector released its verdict after the greeting ended (the beep); the
            # message is not interruptible: there is nobody to interrupt it.
            await agent.session.say(plan.voicemail.message, allow_interruptions=False)
        except RuntimeError as exc:
            logger.info("call %s: voicemail message not left (%s)", plan.call_id, exc)
    else:
        logger.info("call %s: a machine answered; hanging up", plan.call_id)
    try:
        await control.hang_up()
    except Exception:
        logger.exception("call %s: hang-up failed", plan.call_id)


async def handle_answer(
    session: AgentSession[None],
    agent: OutboundCaller,
    control: CallControl,
    *,
    on_verdict: Callable[[AmdVerdict], None],
    llm: LLM[Any] | None,
    participant_identity: str | None,
    detection_options: DetectionOptions | None = None,
) -> AnswerAction:
    """Detect, report the verdict (`on_verdict`), act on it; returns what was done.

    Without a verdict the callee is greeted: hanging up on a person is worse than greeting
    a machine.
    """
    verdict = await detect_machine(
        session,
        llm=llm,
        participant_identity=participant_identity,
        detection_options=detection_options,
    )
    if verdict is not None:
        on_verdict(verdict)
    action = "greet" if verdict is None else answer_action(verdict.category, agent.plan.voicemail)
    await act_on_answer(action, agent, control)
    return action
