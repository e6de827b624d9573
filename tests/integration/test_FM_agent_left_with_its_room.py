"""An answered call whose only word of its agent from LiveKit is the agent's participant
leaving as the room was deleted (our agent deletes the room when the callee hangs up; its
participant_joined webhook lost, and no report of it came: an agent that sends none, or
whose reports cannot reach the server). The agent was in the call and talked to the callee;
the call was settled `failed`, "no agent joined the call before it ended", with the ERROR that
says to start agent workers, and a campaign retrying failures called that person again."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit.protocol import models

from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.integration.test_FG_no_agent_short_call import (
    NO_AGENT_NUMBER,
    hangs_up_answered,
    quiet_app,
    shown,
)
from tests.integration.test_webhooks import event_json, line_joins, place, post, sign

Client = TestClient[Any, Any]


async def agent_leaves(client: Client, call_id: str, reason: int) -> None:
    """Our agent's participant leaves the call's room, as LiveKit says of it."""
    body = event_json(
        "participant_left",
        call_id,
        identity=f"agent-{call_id}",
        participant_kind=models.ParticipantInfo.Kind.AGENT,
        attributes={"lk.agent.name": client.app[SETTINGS].agent_name},
        reason=reason,
    )
    assert await post(client, body, sign(body)) == 200


async def test_its_agent_leaving_with_the_deleted_room_keeps_the_call_completed(
    start_app_on_each_database: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await quiet_app(start_app_on_each_database)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_leaves(client, call_id, models.DisconnectReason.ROOM_DELETED)
    await hangs_up_answered(client, call_id)
    call = await shown(client, call_id)
    assert (call["status"], call["reason"]) == ("completed", None)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [left] = [e for e in call["timeline"] if e["event"] == "participant_left"][:1]
    assert left["detail"].get("agent_in_call") is True


async def test_another_programs_agent_leaving_is_no_sign_of_ours(start_app: AppFactory) -> None:
    """An agent of another name (one the project dispatches to every room) is not ours."""
    client = await quiet_app(start_app)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    body = event_json(
        "participant_left",
        call_id,
        identity=f"other-{call_id}",
        participant_kind=models.ParticipantInfo.Kind.AGENT,
        attributes={"lk.agent.name": "someone-else"},
        reason=models.DisconnectReason.ROOM_DELETED,
    )
    assert await post(client, body, sign(body)) == 200
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "failed"
