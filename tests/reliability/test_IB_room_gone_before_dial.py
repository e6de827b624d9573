"""A call whose room ended between its agent's dispatch and its dial (its server stalled
there past the agent's wait for a callee: the ringing timeout and 15 s, after which the agent
ends the room) is not dialled. Found with two servers on PostgreSQL: the server placing a
campaign's call stalled 18 s (SIGSTOP) between the dispatch and the dial; the sandbox's agent
ended the room meanwhile, the other server recorded its room_finished, and on waking the
first one dialled all the same: LiveKit made a new room for the dial, with no agent in it, and
the callee answered to silence ("no agent joined the call ...; the callee had answered and
heard nobody"). Now the dial is not made: the call settles failed with nobody called (a
campaign's attempt `not_dialled`, placed again), and its placer is answered 503."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import common.calls.service as service_module
import sandbox.services
from common.livekit.client import dispatch_agent
from server import SANDBOX
from tests.conftest import AppFactory

CALL = {
    "phone_number": "+14155550188",
    "name": "Room Gone",
    "language": "en",
    "emotion": "Calm",
    "ringing_timeout_s": 5,
}


async def test_a_call_whose_room_ended_before_its_dial_is_not_dialled(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox.services, "MIN_CALLEE_WAIT_S", 0.1)
    client = await start_app(sandbox_time_scale=0.01)
    gone: list[str] = []

    async def dispatch_then_stall(*args: Any, **kwargs: Any) -> Any:
        dispatched = await dispatch_agent(*args, **kwargs)
        call_id = kwargs["call_id"]
        async with asyncio.timeout(5):
            while True:  # the server stalls here until the agent ended the room
                call = await (await client.get(f"/calls/{call_id}")).json()
                if any(e["event"] == "room_finished" for e in call["timeline"]):
                    break
                await asyncio.sleep(0.02)
        gone.append(call_id)
        return dispatched

    monkeypatch.setattr(service_module, "dispatch_agent", dispatch_then_stall)
    resp = await client.post("/calls/outbound", json=CALL)
    assert len(gone) == 1
    assert resp.status == 503, await resp.text()
    sandbox_app = client.app[SANDBOX]
    assert not [r for r in sandbox_app.requests if r.method == "CreateSIPParticipant"]
    call = await (await client.get(f"/calls/{gone[0]}")).json()
    assert call["status"] == "failed"
    assert "nobody was called" in call["reason"], call["reason"]
