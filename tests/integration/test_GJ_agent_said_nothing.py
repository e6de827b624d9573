"""An agent that failed on an answered call before it said a word: the callee answered to
silence and a hang-up, so the call is `failed`, not `completed` (the real app, LiveKit's
signed webhooks carrying the room metadata the agent writes)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import AppFactory
from tests.integration.test_webhooks import event_json, place, post, quiet_app, sign

REASON = "the agent's session failed: llm (openai) APIStatusError 401"
SAID_NOTHING = "; the callee had answered and the agent had not begun the conversation"


@pytest.mark.parametrize(
    ("spoke", "status", "reason"),
    [
        # A provider refusing its key (credits spent, down) before the greeting: the callee
        # heard nothing; it read `completed` (a campaign never called them again, its
        # operator saw a completed call), while a callee no agent came to is `failed`.
        (False, "failed", REASON + SAID_NOTHING),
        # The agent had talked with the callee: it stays `completed`, saying why it ended.
        (True, "completed", REASON),
        # An agent of an earlier release does not say: as before.
        (None, "completed", REASON),
    ],
)
async def test_an_answered_call_whose_agent_failed_silent_is_failed(
    start_app: AppFactory, spoke: bool | None, status: str, reason: str
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    # As the agent writes it (`fail_call`): `spoke` with its failure, if it says.
    told = {} if spoke is None else {"spoke": spoke}
    metadata = json.dumps({"outcome": "failed", "reason": REASON} | told)
    events = [
        event_json("participant_joined", call_id, attributes={"sip.callStatus": "active"}),
        event_json("participant_left", call_id, attributes={"sip.callStatus": "active"}),
        event_json("room_finished", call_id, metadata=metadata),
    ]
    for body in events:
        assert await post(client, body, sign(body)) == 200

    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert (shown["status"], shown["reason"]) == (status, reason)
    assert shown["answered_at"] is not None
