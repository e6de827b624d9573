"""What happens once the callee picks up: the person-or-machine decision (pure), the gate
that keeps the LLM from answering "Hello?" before the greeting, and livekit-agents' real AMD
driving the greeting, the voicemail message or the hang-up.

Text-only sessions, scripted LLM, no network. Without a room there is no audio path, so two
private hooks stand in for it, exactly where the framework's audio recognition calls them:
`AMD._on_transcript` (a final STT transcript) and `AgentActivity.on_end_of_turn` (the end of
the callee's turn). They may change with livekit-agents; the notes (agents.md §1, §7) say so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from livekit.agents import AgentSession
from livekit.agents.llm import ChatContext, FunctionToolCall
from livekit.agents.voice.amd.detector import DetectionOptions
from livekit.agents.voice.audio_recognition import _EndOfTurnInfo, _EndOfTurnMetrics

from agent.answer import handle_answer
from agent.caller import OutboundCaller
from agent.plan import AnswerAction, SessionPlan, answer_action, plan_session
from agent.results import TranscriptRecorder
from common.config_store.model import CallConfig, CallOptions, VoicemailPolicy
from common.contracts import AmdVerdict, TranscriptTurn
from common.settings import Settings
from tests.unit.test_agent_conversation import FakeCallControl, ScriptedLLM

pytestmark = pytest.mark.usefixtures("no_network")

HANG_UP = VoicemailPolicy()
LEAVE = VoicemailPolicy(action="leave_message", message="Hi Alice, coach here. Call me back!")
FIRST_MESSAGE = "Hi Alice, it's your cricket coach."
VOICEMAIL_GREETING = "Hi, you've reached Alice. Please leave a message after the tone."
# Short detector timers: the verdict comes a moment after the simulated end of turn.
FAST_AMD = DetectionOptions(max_endpointing_delay=0.2, no_speech_threshold=3.0, timeout=5.0)


@pytest.mark.parametrize(
    ("category", "policy", "action"),
    [
        ("human", HANG_UP, "greet"),
        ("human", LEAVE, "greet"),
        ("uncertain", HANG_UP, "greet"),
        ("uncertain", LEAVE, "greet"),
        ("machine-vm", LEAVE, "leave_message"),
        ("machine-vm", HANG_UP, "hang_up"),
        ("machine-ivr", LEAVE, "hang_up"),
        ("machine-ivr", HANG_UP, "hang_up"),
        ("machine-unavailable", LEAVE, "hang_up"),
        ("machine-unavailable", HANG_UP, "hang_up"),
    ],
)
def test_what_to_do_on_each_verdict(
    category: str, policy: VoicemailPolicy, action: AnswerAction
) -> None:
    assert answer_action(category, policy) == action


def alice_plan(
    first_message: str | None = FIRST_MESSAGE, voicemail: VoicemailPolicy = HANG_UP
) -> SessionPlan:
    options = CallOptions(first_message=first_message, voicemail=voicemail)
    config = CallConfig.create("Alice Smith", "You are a cricket coach.", options=options)
    return plan_session(config, Settings(), call_id="call-ab12cd34ef56")


def end_user_turn(session: AgentSession[None], text: str) -> None:
    """What the audio path does when the callee stops speaking: a final transcript for the
    detector (while it listens), then the end of the turn for the agent."""
    if session.amd is not None:
        session.amd._on_transcript(text)
    activity = session._activity
    assert activity is not None
    metrics = _EndOfTurnMetrics(None, None, None, None)
    activity.on_end_of_turn(
        _EndOfTurnInfo(
            skip_reply=False, new_transcript=text, transcript_confidence=1.0, metrics=metrics
        )
    )


def said(ctx: ChatContext) -> list[tuple[str, str]]:
    """The conversation in a context, without the agent's instructions (the first item)."""
    return [(m.role, m.text_content or "") for m in ctx.messages()[1:]]


async def eventually(check: object, what: str, seconds: float = 5.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def amd_says(label: str, transcript: str) -> dict[str, tuple[str, list[FunctionToolCall]]]:
    call = FunctionToolCall(
        name="save_prediction", arguments=json.dumps({"label": label}), call_id="amd_1"
    )
    return {f"amd:{transcript}": ("", [call])}


async def test_the_llm_is_not_asked_to_reply_before_the_greeting() -> None:
    llm = ScriptedLLM({"Who is this?": ("Your cricket coach!", [])})
    held: list[TranscriptTurn] = []
    recorder = TranscriptRecorder(held.append)
    recorder.start(time.time())
    agent = OutboundCaller(alice_plan(), FakeCallControl(), on_held_turn=recorder.add_message)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        end_user_turn(session, "Hello?")
        await eventually(lambda: held, "the held turn")
        await asyncio.sleep(0.2)
        assert llm.contexts == []  # no reply to "Hello?"
        assert said(agent.chat_ctx) == [("user", "Hello?")]  # but the LLM will see it

        await agent.greet()
        end_user_turn(session, "Who is this?")
        await eventually(lambda: llm.contexts, "the reply")

    assert said(llm.contexts[0]) == [
        ("user", "Hello?"),
        ("assistant", FIRST_MESSAGE),
        ("user", "Who is this?"),
    ]
    assert [(t.role, t.text) for t in held] == [("callee", "Hello?")]


async def test_what_the_line_carried_before_the_answer_is_neither_a_turn_nor_context() -> None:
    """The SIP line carries audio while it rings (ringback, a carrier's announcement): the
    session hears it, but it is not the callee's, so it is neither reported nor given to
    the LLM."""
    llm = ScriptedLLM({"Who is this?": ("Your cricket coach!", [])})
    held: list[TranscriptTurn] = []
    recorder = TranscriptRecorder(held.append)
    agent = OutboundCaller(alice_plan(), FakeCallControl(), on_held_turn=recorder.add_message)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        end_user_turn(session, "The person you are calling is not available.")
        await asyncio.sleep(0.3)
        recorder.start(time.time())  # answered
        end_user_turn(session, "Hello?")
        await eventually(lambda: held, "the held turn")
        assert said(agent.chat_ctx) == [("user", "Hello?")]
        assert llm.contexts == []
    assert [(t.role, t.text) for t in held] == [("callee", "Hello?")]
    assert recorder.turns == held


async def run_answer(
    llm: ScriptedLLM, plan: SessionPlan, words: str | None, options: DetectionOptions = FAST_AMD
) -> tuple[AnswerAction, list[AmdVerdict], FakeCallControl, OutboundCaller, list[TranscriptTurn]]:
    control = FakeCallControl()
    verdicts: list[AmdVerdict] = []
    turns: list[TranscriptTurn] = []
    recorder = TranscriptRecorder(turns.append)
    agent = OutboundCaller(plan, control, on_held_turn=recorder.add_message)
    async with llm, AgentSession[None](llm=llm) as session:
        session.on("conversation_item_added", recorder.on_item_added)
        await session.start(agent)
        recorder.start(time.time())
        answering = asyncio.create_task(
            handle_answer(
                session,
                agent,
                control,
                on_verdict=verdicts.append,
                llm=llm,
                participant_identity="sip-call-ab12cd34ef56",
                detection_options=options,
            )
        )
        await eventually(lambda: session.amd is not None, "the detector")
        if words is not None:
            end_user_turn(session, words)
        action = await asyncio.wait_for(answering, 10)
        if action in ("greet", "leave_message"):  # something is said: wait for its turn
            await eventually(lambda: any(t.role == "agent" for t in turns), "the agent's turn")
        await asyncio.sleep(0.1)  # and for anything more it would say
    return action, verdicts, control, agent, turns


async def test_a_person_hears_the_first_message_not_an_llm_reply() -> None:
    llm = ScriptedLLM(amd_says("human", "Hello?"))

    action, verdicts, control, agent, turns = await run_answer(llm, alice_plan(), "Hello?")

    assert action == "greet" and agent.greeted
    assert verdicts == [AmdVerdict(category="human", reason="llm")]
    assert len(llm.amd_contexts) >= 1
    assert llm.contexts == []  # the first message is said as is; "Hello?" got no reply
    assert [(t.role, t.text) for t in turns] == [("callee", "Hello?"), ("agent", FIRST_MESSAGE)]
    assert control.actions == []


async def test_the_detector_does_not_warn_of_the_model_on_every_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """livekit-agents' answering-machine detector logged "llm model gpt-4o-mini hasn't been
    evaluated with our benchmark" as a WARNING on every call with the default model (BO): a
    line at 3 a.m. for each call that says nothing about it. The detector keeps it now;
    `agent start` says it once (test_agent_cli)."""
    caplog.set_level(logging.WARNING)
    llm = ScriptedLLM(amd_says("human", "Hello?"))

    action, *_ = await run_answer(llm, alice_plan(), "Hello?")

    assert action == "greet"
    said = [r.getMessage() for r in caplog.records if "hasn't been evaluated" in r.getMessage()]
    assert said == []


async def test_without_a_first_message_the_llm_greets_after_the_verdict() -> None:
    plan = alice_plan(first_message=None)
    # The greeting turn ends with the plan's greeting instructions (a system message).
    greet: dict[str, tuple[str, list[FunctionToolCall]]] = {
        plan.greeting: ("Hi Alice, it's Coach!", [])
    }
    llm = ScriptedLLM({**amd_says("human", "Hmm?"), **greet})

    action, verdicts, control, _agent, turns = await run_answer(llm, plan, "Hmm?")

    assert action == "greet"
    assert verdicts[0].category == "human"
    (greeting,) = llm.contexts  # one LLM turn: the greeting, with "Hmm?" in its context
    assert said(greeting)[-2:] == [("user", "Hmm?"), ("system", plan.greeting)]
    assert [(t.role, t.text) for t in turns] == [
        ("callee", "Hmm?"),
        ("agent", "Hi Alice, it's Coach!"),
    ]


async def test_a_voicemail_box_gets_the_message_then_the_call_ends() -> None:
    llm = ScriptedLLM(amd_says("machine-vm", VOICEMAIL_GREETING))

    action, verdicts, control, agent, turns = await run_answer(
        llm, alice_plan(voicemail=LEAVE), VOICEMAIL_GREETING
    )

    assert action == "leave_message" and not agent.greeted
    assert verdicts == [AmdVerdict(category="machine-vm", reason="llm")]
    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
    assert [(t.role, t.text) for t in turns] == [
        ("callee", VOICEMAIL_GREETING),
        ("agent", LEAVE.message),
    ]
    assert llm.contexts == []


@pytest.mark.parametrize(
    ("label", "policy"),
    [("machine-vm", HANG_UP), ("machine-ivr", LEAVE), ("machine-unavailable", LEAVE)],
)
async def test_other_machines_are_hung_up_on(label: str, policy: VoicemailPolicy) -> None:
    llm = ScriptedLLM(amd_says(label, VOICEMAIL_GREETING))

    action, verdicts, control, _agent, turns = await run_answer(
        llm, alice_plan(voicemail=policy), VOICEMAIL_GREETING
    )

    assert action == "hang_up"
    assert verdicts[0].category == label
    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]
    assert [t.role for t in turns] == ["callee"]  # nothing said to the machine


async def test_a_callee_who_says_nothing_is_greeted() -> None:
    llm = ScriptedLLM({})
    silent = DetectionOptions(no_speech_threshold=0.3, timeout=5.0)

    action, verdicts, control, agent, turns = await run_answer(llm, alice_plan(), None, silent)

    assert action == "greet" and agent.greeted
    assert verdicts == [AmdVerdict(category="uncertain", reason="no_speech_timeout")]
    assert llm.amd_contexts == []  # nothing to classify
    assert [(t.role, t.text) for t in turns] == [("agent", FIRST_MESSAGE)]
    assert control.actions == []
