"""SANDBOX_TIME_SCALE=0 ("instant", README) plays the test numbers' table too. The callee of
0666 and 0404 waits in silence for the server to end the call (5 s after the agent left; once
AGENT_JOIN_TIMEOUT_S passed), a minute at scale 1; scaled to nothing, the callee hung up at
the same instant as the server's wait ended, and won: both calls read `completed`, no reason,
`ended_by` null, where the table says the server ended them."""

from __future__ import annotations

from typing import Any

import pytest

from common.calls.service import AGENT_GONE
from tests.conftest import AppFactory
from tests.integration.test_call_outcomes import place, wait_final


@pytest.mark.parametrize(
    ("number", "status", "reason"),
    [
        ("+14155550666", "completed", AGENT_GONE),
        ("+14155550404", "failed", "no agent joined the call within 20 s of its dial"),
    ],
)
async def test_instant_sandbox_callee_waits_for_the_server_to_end_the_call(
    start_app: AppFactory, number: str, status: str, reason: str
) -> None:
    client = await start_app(sandbox_time_scale=0.0)
    call_ids = [await place(client, number) for _ in range(3)]
    for call_id in call_ids:
        call: dict[str, Any] = await wait_final(client, call_id)
        assert call["status"] == status, call
        assert (call["reason"] or "").startswith(reason), call
        assert call["ended_by"] == "system", call
