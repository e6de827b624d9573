"""Conversations with the real agent and AgentSession, a scripted LLM and a fake call control.

Uses livekit-agents' testing surface (`AgentSession.run` and `RunResult.expect`), text-only:
no room, no STT/TTS, no network (sockets are refused for the whole test).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any, Never

import pytest
from livekit.agents import AgentSession, ConversationItemAddedEvent, RunResult
from livekit.agents.llm import (
    LLM,
    ChatChunk,
    ChatContext,
    ChatMessage,
    ChoiceDelta,
    CompletionUsage,
    FunctionToolCall,
    LLMStream,
    Tool,
    ToolChoice,
)
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

from agent.caller import OutboundCaller
from agent.plan import SessionPlan, plan_session
from agent.session import build_agent
from common.config_store.model import CallConfig, CallOptions, VoicemailPolicy
from common.settings import Settings

Reply = tuple[str, list[FunctionToolCall]]


pytestmark = pytest.mark.usefixtures("no_network")


class ScriptedLLM(LLM[Never]):  # no events beyond the base LLM's
    """An LLM that answers from a script keyed by the last user message or tool output.

    Keys: the user's text, or `tool:<name>` after a tool ran, or `amd:<text>` for the
    answering-machine detector's request (the one offering the `save_prediction` tool).
    Every chat context it is given is kept (`contexts`, and `amd_contexts` for the
    detector's), so tests can check what the model was told. With `usage`, each answer ends
    with a usage chunk of (prompt, completion) tokens, which feeds `session.usage`.
    """

    def __init__(self, script: dict[str, Reply], usage: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.script = script
        self.usage = usage
        self.contexts: list[ChatContext] = []
        self.amd_contexts: list[ChatContext] = []

    @property
    def model(self) -> str:
        return "scripted-model"

    @property
    def provider(self) -> str:
        return "scripted"

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> LLMStream:
        for_amd = any(tool.id == "save_prediction" for tool in tools or [])
        (self.amd_contexts if for_amd else self.contexts).append(chat_ctx.copy())
        return ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class ScriptedStream(LLMStream):
    def __init__(
        self,
        llm: ScriptedLLM,
        *,
        chat_ctx: ChatContext,
        tools: list[Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(llm, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._script = llm.script
        self._usage = llm.usage

    async def _run(self) -> None:
        last = self._chat_ctx.items[-1]
        if last.type == "message":
            key = last.text_content or ""
        elif last.type == "function_call_output":
            key = f"tool:{last.name}"
        else:
            key = ""
        if any(tool.id == "save_prediction" for tool in self._tools):
            key = f"amd:{key}"
        text, calls = self._script.get(key, ("", []))
        if text:
            self._event_ch.send_nowait(
                ChatChunk(id="scripted", delta=ChoiceDelta(role="assistant", content=text))
            )
        if calls:
            self._event_ch.send_nowait(
                ChatChunk(id="scripted", delta=ChoiceDelta(role="assistant", tool_calls=calls))
            )
        if self._usage is not None:
            prompt, completion = self._usage
            usage = CompletionUsage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
            )
            self._event_ch.send_nowait(ChatChunk(id="scripted", usage=usage))


class FakeCallControl:
    """Records what the agent did to the call instead of calling LiveKit."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, ...]] = []

    async def set_outcome(self, outcome: str) -> None:
        self.actions.append(("set_outcome", outcome))

    async def hang_up(self) -> None:
        self.actions.append(("hang_up",))

    def do_not_call(self) -> None:
        self.actions.append(("do_not_call",))


def tool_call(name: str) -> list[FunctionToolCall]:
    return [FunctionToolCall(name=name, arguments="{}", call_id=f"call_{name}")]


def alice_plan() -> SessionPlan:
    config = CallConfig.create(
        "Alice Smith",
        "You are a cricket coach. Help the caller improve their batting technique.",
        "en",
        "Excited",
        {"customer_tier": "Premium"},
        call_id="call-ab12cd34ef56",
    )
    return plan_session(config, Settings(), source="config.json")


async def hung_up(agent: OutboundCaller) -> None:
    """Wait (bounded) for the hang-up the tool scheduled after its reply."""
    for _ in range(200):
        if agent.hangup_task is not None:
            await agent.hangup_task
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the agent never hung up")


async def said_until_hung_up(
    agent: OutboundCaller,
    llm: ScriptedLLM,
    heard: str,
    started: Callable[[], None] | None = None,
    linger_s: float = 0.0,
) -> list[str]:
    """What `agent` said (its messages' text), in a session of `llm` given one turn of the
    callee's, `heard`, until it hung up, and `linger_s` more (a message begun after the
    hang-up is added by then); `started`: called once the session has started."""
    said: list[str] = []

    async with llm, AgentSession[None](llm=llm) as session:

        def on_item(event: ConversationItemAddedEvent) -> None:
            if isinstance(event.item, ChatMessage) and event.item.role == "assistant":
                said.append(event.item.text_content or "")

        session.on("conversation_item_added", on_item)
        await session.start(agent)
        if started is not None:
            started()
        await session.run(user_input=heard)
        await hung_up(agent)
        await asyncio.sleep(linger_s)
    return said


async def test_agent_is_told_the_callers_name_and_the_calls_instructions() -> None:
    plan = alice_plan()
    llm = ScriptedLLM({"Hi, who is this?": ("Hi Alice, it's your cricket coach!", [])})
    agent = build_agent(plan, FakeCallControl())

    assert "Alice Smith" in str(agent.instructions)
    assert "You are a cricket coach." in str(agent.instructions)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        result: RunResult[None] = await session.run(user_input="Hi, who is this?")

    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    system = llm.contexts[-1].items[0]
    assert system.type == "message" and system.role == "system"
    told = system.text_content or ""
    assert "You are a cricket coach. Help the caller improve their batting technique." in told
    assert "Alice Smith" in told
    assert "Call context: customer_tier: Premium" in told


async def test_goodbye_turn_ends_the_call_after_the_goodbye() -> None:
    plan = alice_plan()
    control = FakeCallControl()
    llm = ScriptedLLM(
        {
            "Thanks, that's all. Goodbye!": ("", tool_call("end_call")),
            "tool:end_call": ("Goodbye Alice, keep practising!", []),
        }
    )
    agent = build_agent(plan, control)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        result: RunResult[None] = await session.run(user_input="Thanks, that's all. Goodbye!")
        await hung_up(agent)

    result.expect.next_event().is_function_call(name="end_call")
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert control.actions == [("hang_up",)]


async def test_asking_not_to_be_called_again_is_recorded_then_the_call_ends() -> None:
    plan = alice_plan()
    control = FakeCallControl()
    llm = ScriptedLLM(
        {
            "Please stop calling me.": ("", tool_call("add_to_do_not_call")),
            "tool:add_to_do_not_call": ("Sorry Alice, we won't call again. Goodbye.", []),
        }
    )
    agent = build_agent(plan, control)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        result: RunResult[None] = await session.run(user_input="Please stop calling me.")
        await hung_up(agent)

    result.expect.next_event().is_function_call(name="add_to_do_not_call")
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert control.actions == [("do_not_call",), ("hang_up",)]


def voicemail_script() -> ScriptedLLM:
    """An LLM that recognises a voicemail greeting, and would improvise a message if asked."""
    return ScriptedLLM(
        {
            "Please leave a message after the tone.": ("", tool_call("detected_answering_machine")),
            "tool:detected_answering_machine": ("Hi Alice, your coach here; I'll call back.", []),
        }
    )


async def test_answering_machine_found_by_the_llm_is_hung_up_on_without_a_message() -> None:
    """The call's voicemail policy is hang_up (the default): no message is left, as for the
    detector's verdict. The LLM was asked for one and left it on every voicemail box."""
    plan = alice_plan()
    assert plan.voicemail.action == "hang_up"
    control = FakeCallControl()
    llm = voicemail_script()
    agent = build_agent(plan, control)

    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        result: RunResult[None] = await session.run(
            user_input="Please leave a message after the tone."
        )
        await hung_up(agent)

    result.expect.next_event().is_function_call(name="detected_answering_machine")
    result.expect.next_event().is_function_call_output()
    result.expect.no_more_events()
    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]


async def test_answering_machine_found_by_the_llm_gets_the_calls_own_message() -> None:
    message = "Hi Alice, this is your coach. Practice is moved to Friday."
    options = CallOptions(voicemail=VoicemailPolicy(action="leave_message", message=message))
    plan = dataclasses.replace(alice_plan(), voicemail=options.voicemail)
    control = FakeCallControl()
    llm = voicemail_script()
    agent = build_agent(plan, control)

    said = await said_until_hung_up(agent, llm, "Please leave a message after the tone.")

    assert said == [message]
    assert control.actions == [("set_outcome", "voicemail"), ("hang_up",)]


async def test_a_failing_hang_up_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenControl(FakeCallControl):
        async def hang_up(self) -> None:
            raise RuntimeError("livekit unreachable")

    llm = ScriptedLLM({"bye": ("", tool_call("end_call")), "tool:end_call": ("Bye!", [])})
    agent = build_agent(alice_plan(), BrokenControl())
    async with llm, AgentSession[None](llm=llm) as session:
        await session.start(agent)
        await session.run(user_input="bye")
        await hung_up(agent)
    assert "hang-up failed" in caplog.text
