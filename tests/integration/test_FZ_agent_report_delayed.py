"""An agent whose clock agrees with the server's, and a report of it that took a few seconds
to arrive (a loaded server, a slow proxy, a lost SYN): its `at` was moved by the whole delay,
taken for the agent's clock being behind. A call that rang 1 s read `ring_s` ~4.5 and its
talk that much shorter. A report's own signing time is no measure of the clocks alone: one
arrives late, never early, so the agent's clock is taken as behind only when its reports
have said so for a while (as LiveKit's webhooks must); one ahead is one whatever the delay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from common.livekit import skew
from tests.conftest import AppFactory
from tests.integration.test_call_results import Client, answered
from tests.integration.test_FT_agent_clock_behind import callee_hangs_up, post_signed_at
from tests.integration.test_webhooks import line_joins, place, quiet_app

DELAY_S = 3.5  # the report's time in transit


async def ring_and_answer_late(client: Client) -> tuple[dict[str, Any], float]:
    """A call that rings 1 s, whose answer report arrives DELAY_S after it was signed, and
    talks DELAY_S + 1 s: the call as the server shows it, and how long it rang by the test's
    clock (from before its placing to its answer: a loaded machine's sleeps run long)."""
    placing = time.time()
    call_id = await place(client)
    await line_joins(client, call_id)
    await asyncio.sleep(1.0)  # it rings
    answered_at = time.time()
    await asyncio.sleep(DELAY_S)  # the report, signed at the answer, on its way
    report = answered(call_id, at=answered_at)
    assert await post_signed_at(client, report, call_id, answered_at) == 200
    await asyncio.sleep(1.0)
    return await callee_hangs_up(client, call_id), answered_at - placing


async def test_a_late_report_of_a_server_just_started_keeps_its_time(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    shown, rang = await ring_and_answer_late(client)
    assert 0.8 <= shown["ring_s"] <= rang + 1.2, (shown, rang)  # not DELAY_S more
    assert shown["talk_s"] >= DELAY_S, shown


async def test_a_late_report_among_prompt_ones_keeps_its_time(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(skew, "SPAN_S", 0.0)  # the agents' reports have kept coming long enough
    client = await quiet_app(start_app)
    earlier = await place(client)
    await line_joins(client, earlier)
    prompt = answered(earlier, at=time.time())
    assert await post_signed_at(client, prompt, earlier, time.time()) == 200
    shown, rang = await ring_and_answer_late(client)
    assert 0.8 <= shown["ring_s"] <= rang + 1.2, (shown, rang)
    assert shown["talk_s"] >= DELAY_S, shown
