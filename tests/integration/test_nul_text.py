"""Text holding a NUL (U+0000) from each sender whose text is stored: LiveKit's webhooks, the
agent's reports, API clients. PostgreSQL's text cannot hold a NUL while SQLite can, so such
text was a 503 on PostgreSQL alone (LiveKit and the agent retry a 5xx for ever) and taken on
SQLite. Now each is the same clean 4xx on both, before anything is stored.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.contracts import REPORTS_PATH
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered, report_token, shown
from tests.integration.test_webhooks import event_json, place, quiet_app, sign

Client = TestClient[Any, Any]
NUL = "\x00"


async def post_event(client: Client, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = json.dumps(event).encode()
    resp = await client.post(
        "/webhooks/livekit", data=io.BytesIO(body), headers={"Authorization": sign(body)}
    )
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


async def post_report(
    client: Client, sent: dict[str, Any], room: str
) -> tuple[int, dict[str, Any]]:
    body = json.dumps(sent).encode()
    headers = {"Authorization": "Bearer " + report_token(body, room)}
    resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
    answer: dict[str, Any] = await resp.json()
    return resp.status, answer


# ----------------------------------------------------------------------------- LiveKit


def _with_nul(event: dict[str, Any], where: str) -> dict[str, Any]:
    """`event` with a NUL in the string at `where` (a dotted path)."""
    *parents, name = where.split(".")
    holder = event
    for parent in parents:
        holder = holder[parent]
    holder[name] += NUL
    return event


@pytest.mark.parametrize(
    "where", ["id", "event", "room.name", "room.metadata", "participant.attributes.sip.callID"]
)
async def test_a_signed_event_with_a_nul_is_malformed(
    start_app_on_each_database: AppFactory, where: str
) -> None:
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    attributes = {"sip.callStatus": "active", "sip.callID": "SCL_1"}
    joined = json.loads(
        event_json("participant_joined", call_id, attributes=attributes, metadata="{}")
    )
    if where.startswith("participant.attributes."):  # a key with dots of its own
        joined["participant"]["attributes"]["sip.callID"] += NUL
    else:
        _with_nul(joined, where)
    status, answer = await post_event(client, joined)
    assert (status, answer["error"]) == (400, "webhook body is not a LiveKit event")
    assert (await shown(client, call_id))["status"] == "dialing"
    # The same event without the NUL is taken: the database never failed.
    clean = json.loads(event_json("participant_joined", call_id, attributes=attributes))
    assert await post_event(client, clean) == (200, {"status": "success", "result": "applied"})
    assert (await shown(client, call_id))["status"] == "in_progress"


# ----------------------------------------------------------------------------- the agent


async def test_a_report_whose_call_id_holds_a_nul_is_malformed(
    start_app_on_each_database: AppFactory,
) -> None:
    """On SQLite it was a 404 (no such call), on PostgreSQL a 503 the agent retried."""
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    status, answer = await post_report(client, answered(call_id + NUL), room=call_id + NUL)
    assert (status, answer["error"]) == (400, "not an agent report")
    assert answer["details"] == [{"field": "call_id", "error": "must not contain NUL characters"}]
    assert await post_report(client, answered(call_id), room=call_id) == (
        200,
        {"status": "success", "result": "applied"},
    )
