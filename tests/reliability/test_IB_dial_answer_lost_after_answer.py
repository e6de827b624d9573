"""A dial whose answer from LiveKit is lost (its request timed out, or its connection dropped)
after LiveKit's own events showed the callee answered. Found with two servers on PostgreSQL:
the server placing a campaign's call stalled 18 s (SIGSTOP) just after sending its dial; the
callee answered and talked for 10 s meanwhile, the other server recorded it, and on waking the
placing server's dial timed out ("LiveKit did not answer within 10 s"): the call, answered,
talked and reported with five turns, was settled `failed`, and its room deleted (on a call
still going, the callee cut off mid-sentence). LiveKit took that dial: its events say so.
Now the call goes on as placed and ends as its events say; a dial that may have rung with
nothing shown of it yet is failed as before (test_livekit_faults' "sip slow")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import common.calls.service as service_module
from common.calls.service import CallService
from common.livekit.client import LiveKitTimeout, dial
from server import SANDBOX
from tests.conftest import AppFactory

# The callee hangs up 30 s (0.3 s at the test's scale) after answering.
CALL = {"phone_number": "+14155557730", "name": "Lost Answer", "language": "en", "emotion": "Calm"}


async def missed(*_args: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("missed_first", "shown"),
    [(False, "in_progress"), (True, "in_progress"), (False, "completed")],
    ids=["seen first", "seen by the settle", "ended first"],
)
async def test_a_dial_timing_out_after_the_callee_answered_is_not_failed(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, missed_first: bool, shown: str
) -> None:
    """`ended first`: the callee answered, talked and hung up before the dial's answer was
    lost (the placing server stalled longer): the placer was answered 504 and the call
    counted failed, for a call completed."""
    client = await start_app(sandbox_time_scale=0.01)
    seen: list[str] = []

    async def dial_answer_lost(*args: Any, **kwargs: Any) -> Any:
        await dial(*args, **kwargs)
        call_id = kwargs["call_id"]
        async with asyncio.timeout(5):
            while True:  # LiveKit's and the agent's word of the answer came first
                call = await (await client.get(f"/calls/{call_id}")).json()
                if call["status"] == shown:
                    break
                await asyncio.sleep(0.01)
        seen.append(call["status"])
        raise LiveKitTimeout("SIP dial: LiveKit did not answer within 10 s", maybe_done=True)

    monkeypatch.setattr(service_module, "dial", dial_answer_lost)
    if missed_first:  # shown taken after the first look: the settle's own check finds it
        monkeypatch.setattr(CallService, "_dial_taken_after_all", missed)
    resp = await client.post("/calls/outbound", json=CALL)
    assert seen == [shown]
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    call_id = answer["call_id"]
    async with asyncio.timeout(10):
        while (call := await (await client.get(f"/calls/{call_id}")).json())["status"] in (
            "dialing",
            "ringing",
            "in_progress",
        ):
            await asyncio.sleep(0.02)
    assert call["status"] == "completed", call["reason"]
    assert call["ended_by"] == "callee"
    # Its room was never deleted by the server: the callee hung up in their own time.
    sandbox = client.app[SANDBOX]
    assert not [r for r in sandbox.requests if r.method == "DeleteRoom"]
    # Counted placed once, never failed too (shown taken only by the settle, it was both).
    metrics = await (await client.get("/metrics")).text()
    assert 'calls_placed_total{result="placed"} 1.0' in metrics
    assert 'calls_placed_total{result="failed"} 0.0' in metrics
