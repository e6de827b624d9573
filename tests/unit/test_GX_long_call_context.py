"""A long call's LLM requests carry the agent's instructions and the latest turns, not the
whole conversation.

Every reply was asked of OpenAI with the call's whole history: at turn 400 of a long call,
801 messages (87 KB) a request and growing by two a turn, so that the input tokens of an
hour's call grew with the square of its length and, past the model's context window, every
reply failed (the callee heard the apology, then the line drop). The real session
(`build_session`) against local stand-ins of OpenAI, Cartesia and Deepgram
(tests/unit/test_agent_wire.py), and `bounded_context` on contexts made to its limits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from livekit.agents.llm import ChatContext, FunctionCall, FunctionCallOutput
from pytest_aiohttp import AiohttpServer

from agent import caller
from agent.caller import CONTEXT_STEP, MAX_CONTEXT_CHARS, MAX_CONTEXT_ITEMS, bounded_context
from agent.plan import plan_session
from tests.unit.test_agent_answer import end_user_turn, eventually
from tests.unit.test_agent_conversation import FakeCallControl
from tests.unit.test_agent_wire import ALICE, Answer, scripted_openai, settings_for
from tests.unit.test_agent_wire import http as http  # noqa: F401 - a fixture
from tests.unit.test_agent_wire import loopback_only as loopback_only  # noqa: F401 - a fixture
from tests.unit.test_GJ_empty_reply import wired_to

# The long call runs under a bound of 20 items left out 8 at a time (the module's values, read
# at each request): 26 turns past it by several steps tell what 130 turns past 100 items did.
# At 100 the test took 6.9 s of CPU, half of it the OpenAI client going over every message of
# its 130 requests (up to 101 messages each); at 20, 1.1 s.
ITEMS, STEP = 20, 8
TURNS = ITEMS // 2 + 2 * STEP  # past the bound, by several steps


def said_by_callee(turn: int) -> str:
    return f"At turn {turn} I say a sentence of ordinary length for a phone call."


def answer(n: int) -> Answer:
    """Request n (from 0): the greeting, a reply per turn, then the goodbye's tool call and
    the goodbye."""
    if n == TURNS + 1:
        return ("end_call", "{}")
    if n == TURNS + 2:
        return "Goodbye Alice!"
    return f"Reply {n}: I see, tell me more."


def contents(request: dict[str, Any]) -> list[str]:
    return [str(m.get("content")) for m in request["messages"]]


def conversation_at(turn: int) -> list[str]:
    """The whole conversation when the callee has said `turn` turns: the greeting, then each
    turn and its reply, up to the callee's last turn."""
    said = ["Reply 0: I see, tell me more."]
    for n in range(1, turn + 1):
        said.append(said_by_callee(n))
        if n < turn:
            said.append(f"Reply {n}: I see, tell me more.")
    return said


@pytest.mark.usefixtures("loopback_only", "http")
async def test_a_long_calls_requests_carry_the_latest_turns(
    aiohttp_server: AiohttpServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Turn after turn past MAX_CONTEXT_ITEMS, each request carries the call's instructions
    first, then at most the latest MAX_CONTEXT_ITEMS items of the conversation in order,
    ending with what the callee just said, its earliest items left out CONTEXT_STEP at a time
    (so that the requests' beginning stays the same for OpenAI's prompt caching); one INFO
    line says the earliest turns are left out. The
    goodbye's tool call, past the bound, is answered and ends the call as ever."""
    monkeypatch.setattr(caller, "MAX_CONTEXT_ITEMS", ITEMS)
    monkeypatch.setattr(caller, "CONTEXT_STEP", STEP)
    caplog.set_level(logging.INFO, "agent.caller")
    openai_in = await scripted_openai(aiohttp_server, answer)
    control = FakeCallControl()
    plan = plan_session(ALICE, settings_for(openai_in), call_id=ALICE.call_id, source="x")
    _cartesia_in, session, agent, tts = await wired_to(aiohttp_server, openai_in, control)
    try:
        await session.start(agent)
        await asyncio.wait_for(agent.greet().wait_for_playout(), 10)
        for turn in range(1, TURNS + 1):
            end_user_turn(session, said_by_callee(turn))
            await eventually(
                lambda t=turn: (
                    len(openai_in.completions) == t + 1 and session.agent_state == "listening"
                ),
                f"the reply to turn {turn}",
                10,
            )
        end_user_turn(session, "That's all, bye!")
        await eventually(lambda: ("hang_up",) in control.actions, "the goodbye", 10)
    finally:
        await session.aclose()
        await tts.aclose()

    requests = openai_in.completions
    assert len(requests) == TURNS + 3
    for request in requests:
        assert len(request["messages"]) <= 1 + ITEMS
        assert request["messages"][0]["role"] == "system"
        assert request["messages"][0]["content"] == plan.instructions
    # Each reply's request: the latest of the conversation, in order, up to the callee's
    # turn; all of it within the bound, past it the earliest left out a step at a time.
    firsts = []
    for turn in range(1, TURNS + 1):
        whole, sent = conversation_at(turn), contents(requests[turn])[1:]
        if len(whole) < ITEMS:
            assert sent == whole
            continue
        assert ITEMS - STEP < len(sent) <= ITEMS
        assert sent == whole[-len(sent) :]
        firsts.append(sent[0])
    # Past the bound, the requests' beginning moved once every STEP / 2 exchanges (5
    # beginnings in 17 replies), not at each.
    assert len(firsts) == 17 and len(set(firsts)) == 5
    # The goodbye: asked with the tool's call and its result, the latest items.
    goodbye = requests[-1]["messages"]
    assert goodbye[-2]["tool_calls"][0]["function"]["name"] == "end_call"
    assert goodbye[-1]["role"] == "tool"
    cut = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert cut == [
        f"call {ALICE.call_id}: the conversation is longer than the LLM is sent"
        f" ({ITEMS} items, {MAX_CONTEXT_CHARS} characters): its earliest turns"
        " are left out from now on"
    ]


def conversation(items: int, *, words: str = "hello") -> ChatContext:
    ctx = ChatContext()
    ctx.add_message(role="system", content="You are a cricket coach.")
    for n in range(items):
        ctx.add_message(role="user" if n % 2 == 0 else "assistant", content=f"{words} {n}")
    return ctx


def test_a_context_within_the_bound_is_sent_as_is() -> None:
    ctx = conversation(MAX_CONTEXT_ITEMS)
    assert bounded_context(ctx) is ctx


def test_the_bound_never_leaves_a_tools_result_without_its_call() -> None:
    """A tool's call and its result straddling the cut: neither leads the request (OpenAI
    refuses a `tool` message that answers no call: every reply of the call would fail)."""
    # The first CONTEXT_STEP items are left out: the last of them is the tool's call.
    ctx = conversation(CONTEXT_STEP - 1)
    ctx.insert(FunctionCall(call_id="call_1", name="end_call", arguments="{}"))
    ctx.insert(FunctionCallOutput(call_id="call_1", name="end_call", output="ok", is_error=False))
    ctx.insert(conversation(MAX_CONTEXT_ITEMS - 1).items[1:])
    assert len(ctx.items) == 1 + MAX_CONTEXT_ITEMS + CONTEXT_STEP
    assert ctx.items[CONTEXT_STEP].type == "function_call"
    sent = bounded_context(ctx)
    assert len(sent.items) == 1 + MAX_CONTEXT_ITEMS - 1
    assert sent.items[0] is ctx.items[0]  # the instructions
    assert sent.items[1].type == "message"
    assert [i.type for i in sent.items].count("function_call_output") == 0
    assert sent.items[-1] is ctx.items[-1]


def test_long_turns_are_bounded_by_their_characters() -> None:
    """A few long monologues: the latest that fit in MAX_CONTEXT_CHARS, at least the last."""
    ctx = conversation(10, words="x" * (MAX_CONTEXT_CHARS // 4))
    sent = bounded_context(ctx)
    assert sent.items[0] is ctx.items[0]
    assert [m.text_content for m in sent.messages()[1:]] == [
        m.text_content for m in ctx.messages()[-3:]
    ]
    huge = conversation(3, words="x" * (2 * MAX_CONTEXT_CHARS))
    assert [m.text_content for m in bounded_context(huge).messages()[1:]] == [
        huge.messages()[-1].text_content
    ]
