"""A participant attribute no database can keep (a NUL, a lone surrogate) is left out of the
event, not the event refused: a SIP header the trunk maps to an attribute (`sip.h.*`, words of
the carrier's or the callee's network, never read here) holding a NUL made every event of the
callee's participant a 400, which LiveKit does not retry: its hang-up lost, the call waited for
the reaper, its timings lost."""

from __future__ import annotations

import json

from livekit.protocol import models

from tests.conftest import AppFactory
from tests.integration.test_FG_no_agent_short_call import agent_joins
from tests.integration.test_webhooks import event_json, line_joins, place, post, quiet_app, sign


async def test_a_nul_in_an_attribute_not_read_loses_no_event(
    start_app_on_each_database: AppFactory,
) -> None:
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    await line_joins(client, call_id)
    await agent_joins(client, call_id)  # somebody talked to the callee
    # A NUL, and a lone surrogate as JSON escapes it (protobuf cannot write one).
    header = {"sip.h.x-carrier-note": "route\x00 7", "sip.h.x-odd": "ODD"}
    answered = event_json(
        "participant_joined", call_id, attributes={"sip.callStatus": "active"} | header
    ).replace(b'"ODD"', b'"\\ud800"')
    assert await post(client, answered, sign(answered)) == 200
    left = event_json(
        "participant_left",
        call_id,
        attributes={"sip.callStatus": "hangup"} | header,
        reason=models.DisconnectReason.CLIENT_INITIATED,
    ).replace(b'"ODD"', b'"\\ud800"')
    assert await post(client, left, sign(left)) == 200
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] == "completed"
    shown = json.dumps(call)
    assert "route" not in shown  # the attribute left out, not kept in part


async def test_an_attribute_read_that_cannot_be_kept_is_as_if_unset(
    start_app_on_each_database: AppFactory,
) -> None:
    """`sip.callStatus` holding a NUL reads as no status: the event still counts."""
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    await line_joins(client, call_id)
    joined = event_json("participant_joined", call_id, attributes={"sip.callStatus": "active\x00"})
    assert await post(client, joined, sign(joined)) == 200
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["status"] in ("dialing", "ringing")  # no word of an answer in it
