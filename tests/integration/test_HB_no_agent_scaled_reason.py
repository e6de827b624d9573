"""README's quick start suggests SANDBOX_TIME_SCALE=0.1 ("ten times faster"). Its `0404`
number (no agent comes) then ended 2 s after its dial, ring_s 2, with the reason "no agent
joined the call within 20 s of its dial": the setting's value, not the time the callee
waited. The reason now says both; at scale 1 (and with a real LiveKit) it is as before."""

from __future__ import annotations

from typing import Any

from tests.conftest import AppFactory
from tests.integration.test_call_outcomes import place, wait_final


async def test_a_scaled_sandbox_says_how_long_the_call_really_waited(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=0.1)
    call: dict[str, Any] = await wait_final(client, await place(client, "+14155550404"))

    assert call["status"] == "failed", call
    assert call["reason"].startswith(
        "no agent joined the call within 20 s of its dial, 2 s at SANDBOX_TIME_SCALE=0.1"
        " (is an agent worker running, registered as AGENT_NAME="
    ), call["reason"]
    assert call["reason"].endswith("; the callee had answered and heard nobody")
    assert 1.5 <= call["ring_s"] < 10, call
