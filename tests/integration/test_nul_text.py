"""Text holding a NUL (U+0000) from each sender whose text is stored: LiveKit's webhooks, the
agent's reports, API clients. PostgreSQL's text cannot hold a NUL while SQLite can, so such
text was a 503 on PostgreSQL alone (LiveKit and the agent retry a 5xx for ever) and taken on
SQLite. Now each is the same clean 4xx on both, before anything is stored.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any, cast

import pytest
from aiohttp.test_utils import TestClient

from common.contracts import REPORTS_PATH
from tests.conftest import AppFactory
from tests.helpers import SEED_TEST_BODY
from tests.integration.test_call_results import answered, report, report_token, shown
from tests.integration.test_webhooks import event_json, place, quiet_app, sign
from tests.unit.test_call_request import NUL_CASES

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


@pytest.mark.parametrize("where", ["id", "event", "room.name", "room.metadata"])
async def test_a_signed_event_with_a_nul_is_malformed(
    start_app_on_each_database: AppFactory, where: str
) -> None:
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    attributes = {"sip.callStatus": "active", "sip.callID": "SCL_1"}
    joined = json.loads(
        event_json("participant_joined", call_id, attributes=attributes, metadata="{}")
    )
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


@pytest.mark.parametrize(
    ("final", "where"),
    [
        pytest.param({"extracted": {"date": "May\x00"}}, "final.extracted", id="extracted-value"),
        pytest.param({"extracted": {"d\x00": 1}}, "final.extracted", id="extracted-key"),
        pytest.param({"usage": {"llm": [{"model": "x\x00"}]}}, "final.usage", id="usage"),
    ],
)
async def test_a_nul_in_a_reports_free_form_objects_is_refused(
    start_app_on_each_database: AppFactory, final: dict[str, Any], where: str
) -> None:
    """Refused like a lone surrogate there (the agent leaves such a part out and says so)."""
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    status, answer = await post_report(client, report(call_id, 1, "final", final=final), call_id)
    assert (status, answer["error"]) == (400, "not an agent report")
    assert answer["details"] == [{"field": where, "error": "must not contain NUL characters"}]
    assert (await shown(client, call_id))["report_status"] == "pending"


async def test_a_nul_in_what_the_agent_heard_or_wrote_is_kept_as_a_replacement_character(
    start_app_on_each_database: AppFactory,
) -> None:
    """The agent cannot fix what the callee said or the LLM wrote, so a NUL there does not
    cost the report: it is kept as U+FFFD, on both databases alike (not as given on SQLite)."""
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client)
    sent = [
        answered(call_id, 0),
        report(call_id, 1, "turn", turn={"role": "callee", "text": "Hi\x00", "at_s": 1.0}),
        report(call_id, 2, "amd", amd={"category": "human", "reason": "a voice\x00"}),
        report(
            call_id,
            3,
            "final",
            final={
                "transcript": [{"role": "callee", "text": "Hi\x00", "at_s": 1.0}],
                "summary": "They said hi\x00",
                "success": {"achieved": True, "reason": "\x00"},
                "analysis_errors": ["date: \x00"],
            },
        ),
    ]
    for each in sent:
        assert await post_report(client, each, call_id) == (
            200,
            {"status": "success", "result": "applied"},
        )
    resp = await client.get(f"/calls/{call_id}")
    assert "\\u0000" not in await resp.text()
    call = await resp.json()
    assert [turn["text"] for turn in call["transcript"]] == ["Hi\ufffd"]
    assert call["summary"] == "They said hi\ufffd"
    assert call["success"] == {"achieved": True, "reason": "\ufffd"}
    assert call["analysis_errors"] == ["date: \ufffd"]


# ----------------------------------------------------------------------------- API clients


async def test_a_nul_in_a_calls_text_is_a_422(start_app_on_each_database: AppFactory) -> None:
    """Each was a 200 (kept inside the call's JSON on both databases, and sent on to the
    agent's prompt, its speech and customer webhooks). The same rule now holds for every text
    a call keeps, whichever database the server uses."""
    client = await start_app_on_each_database()
    refused: dict[str, tuple[int, list[dict[str, str]]]] = {}
    for case in NUL_CASES:
        changes = cast(dict[str, Any], case.values[0])
        resp = await client.post("/calls/outbound", json={**SEED_TEST_BODY, **changes})
        refused[str(case.id)] = (resp.status, (await resp.json())["details"])
    assert refused == {
        str(case.id): (422, [{"field": field, "error": f"{where}must not contain NUL characters"}])
        for case in NUL_CASES
        for _, field, where in [case.values]
    }
    resp = await client.get("/calls")
    assert (await resp.json())["calls"] == []


async def test_a_nul_in_a_campaigns_text_is_refused_like_a_calls(
    start_app_on_each_database: AppFactory,
) -> None:
    client = await start_app_on_each_database()
    row = {"phone_number": "+14155550131", "first_message": "Hi\x00"}
    resp = await client.post(
        "/campaigns",
        json={
            "name": "n",
            "defaults": {"dynamic_instruction": "\x00"},
            "recipients": [row],
        },
    )
    assert resp.status == 422
    assert (await resp.json())["details"] == [
        {"field": "defaults.dynamic_instruction", "error": "must not contain NUL characters"}
    ]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "n",
            "invalid_rows": "skip",
            "recipients": [row, {"phone_number": "+14155550132"}],
            "start_at": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat(),
        },
    )
    answer = await resp.json()
    problem = {"field": "recipients[0].first_message", "error": "must not contain NUL characters"}
    assert (resp.status, answer["invalid_rows"]) == (201, [{"row": 0, **problem}])
