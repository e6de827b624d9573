"""A room_finished whose room metadata holds an outcome no database can keep as it is."""

from __future__ import annotations

import json

from tests.conftest import AppFactory
from tests.integration.test_webhooks import (
    event_json,
    line_joins,
    place,
    post,
    quiet_app,
    sign,
    timeline,
)


async def test_an_outcome_no_database_can_keep_still_finishes_the_call(
    start_app: AppFactory,
) -> None:
    """Room metadata is any text an API key's holder wrote: `{"outcome": "\\ud800..."}` (a
    lone surrogate, escaped: the metadata itself is plain ASCII) made the call's room_finished
    a 500 on every retry of LiveKit's, as its reason no longer could."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    await line_joins(client, call_id)
    metadata = json.dumps({"outcome": "\ud800" + "x" * 5000})
    body = event_json("room_finished", call_id, metadata=metadata)
    assert await post(client, body, sign(body)) == 200
    finished = [e for e in await timeline(client, call_id) if e["event"] == "room_finished"]
    assert len(finished) == 1
    outcome = finished[0]["detail"]["room_outcome"]
    assert outcome.startswith("\ufffdxxx") and len(outcome) == 200
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "no_answer"
