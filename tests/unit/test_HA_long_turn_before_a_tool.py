"""A long turn just before a tool's call and result: the LLM request after the tool still
carries that turn and the tool's items.

`bounded_context` (7dd15cb) kept the latest items within MAX_CONTEXT_CHARS, at least one: a
callee's turn long enough to pass the bound alone, followed by the LLM's add_to_do_not_call
and its result, left the call and the result to be kept, and ChatContext.truncate, which lets
no request lead with a tool's items, took them out too. The request for the reply to the
do-not-call request (apologise, goodbye) carried the instructions and nothing else: the LLM,
seeing no conversation and no tool result, greeted the person who had asked to be removed.
Now the latest turn of either side is always kept, with the tool items after it."""

from __future__ import annotations

from livekit.agents.llm import ChatContext, FunctionCall, FunctionCallOutput

from agent.caller import MAX_CONTEXT_CHARS, bounded_context

RESULT = "The number is on the do-not-call list now. Apologise and say goodbye."


def long_turn_then_tool(turn_chars: int) -> ChatContext:
    ctx = ChatContext()
    ctx.add_message(role="system", content="You are a cricket coach.")
    ctx.add_message(role="assistant", content="Hi Alice, this is your coach.")
    ctx.add_message(role="user", content="x" * turn_chars)
    ctx.insert(FunctionCall(call_id="call_1", name="add_to_do_not_call", arguments="{}"))
    ctx.insert(
        FunctionCallOutput(
            call_id="call_1", name="add_to_do_not_call", output=RESULT, is_error=False
        )
    )
    return ctx


def test_a_turn_passing_the_bound_alone_is_sent_with_the_tool_after_it() -> None:
    ctx = long_turn_then_tool(MAX_CONTEXT_CHARS - 10)  # over the bound with the tool's text
    sent = bounded_context(ctx)
    assert [(i.type, getattr(i, "role", None)) for i in sent.items] == [
        ("message", "system"),
        ("message", "user"),
        ("function_call", None),
        ("function_call_output", None),
    ]
    assert sent.items[-1].output == RESULT  # type: ignore[union-attr]


def test_a_turn_longer_than_the_bound_is_sent_whole_with_the_tool_after_it() -> None:
    ctx = long_turn_then_tool(2 * MAX_CONTEXT_CHARS)
    sent = bounded_context(ctx)
    assert [i.type for i in sent.items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
    ]
    assert sent.items[1] is ctx.items[2]  # the callee's turn, not the agent's greeting


def test_turns_within_the_bound_before_the_tool_are_sent_as_before() -> None:
    ctx = long_turn_then_tool(MAX_CONTEXT_CHARS // 2)
    assert bounded_context(ctx) is ctx
