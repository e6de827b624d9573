"""Our agent joining the room of a call whose line had already ended, as LiveKit shows it.

The server dispatches the agent, then dials. LiveKit says a busy line, an invalid number or a
trunk's refusal within a second of the dial (the SIP participant leaves with USER_REJECTED,
USER_UNAVAILABLE or, dropped, CLIENT_INITIATED: livekit/sip pkg/sip/errors.go
classifyInviteError), while the agent's job takes a second or two to join, and LiveKit posts
its participant_joined when it is connected (livekit/livekit pkg/telemetry/events.go
ParticipantActive). That participant_joined, after the call was settled, was said at WARNING
as "call ... is busy but its room is alive (participant_joined); ending it", the line meant
for a dial that landed late, for routine calls. The sandbox posts no participant_joined of
the agent, so no test had shown it. The room is still ended; the line is INFO."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit.protocol import models

from handlers.keys import CALLS, SETTINGS
from tests.conftest import AppFactory
from tests.integration.test_FG_no_agent_short_call import quiet_app
from tests.integration.test_webhooks import event_json, place, post, sign

Client = TestClient[Any, Any]
REASONS = models.DisconnectReason


async def send(client: Client, kind: str, room: str, at: int, **participant: Any) -> None:
    """A webhook as LiveKit posts it, made at `at` (its createdAt)."""
    doc = json.loads(event_json(kind, room, **participant))
    doc["createdAt"] = str(at)
    body = json.dumps(doc).encode()
    assert await post(client, body, sign(body)) == 200


@pytest.mark.parametrize(
    ("reason", "status"),
    [(REASONS.USER_REJECTED, "busy"), (REASONS.CLIENT_INITIATED, "failed")],
)
async def test_the_agent_joining_after_the_line_ended_is_no_warning(
    start_app: AppFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    reason: int,
    status: str,
) -> None:
    client = await quiet_app(start_app)
    calls = client.app[CALLS]
    closed: list[str] = []
    close_room_soon = calls._close_room_soon

    def recorded(call_id: str) -> None:
        closed.append(call_id)
        close_room_soon(call_id)

    monkeypatch.setattr(calls, "_close_room_soon", recorded)
    call_id = await place(client)
    now = int(calls.clock())
    await send(client, "room_started", call_id, now)
    await send(client, "participant_joined", call_id, now, attributes={"sip.callStatus": "dialing"})
    line = {"attributes": {"sip.callStatus": "dialing"}, "reason": reason}
    await send(client, "participant_left", call_id, now, **line)
    assert (await (await client.get(f"/calls/{call_id}")).json())["status"] == status
    closed.clear()
    agent = {
        "identity": f"agent-{call_id}",
        "participant_kind": models.ParticipantInfo.Kind.AGENT,
        "attributes": {"lk.agent.name": client.app[SETTINGS].agent_name},
    }
    # Made when it is sent, after the end: `now` is a whole second, and on a loaded machine
    # the end (the server's clock when it settled the call) may come a second after it, which
    # reads as an agent that joined before the end and whose webhook came late.
    joined = math.ceil(calls.clock())
    with caplog.at_level(logging.INFO, logger="common.calls.service"):
        await send(client, "participant_joined", call_id, joined, **agent)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if "room is alive" in w], warnings
    assert f"call {call_id} is {status}; its agent joined its room after its end" in caplog.text
    assert closed == [call_id]  # its room goes all the same (re-created by the agent's join)
    shown = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] == status


async def test_the_room_started_again_after_the_end_is_still_said(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A room that starts after the call's end (a dial that landed late) is still a WARNING."""
    client = await quiet_app(start_app)
    call_id = await place(client)
    now = int(client.app[CALLS].clock())
    line = {"attributes": {"sip.callStatus": "ringing"}, "reason": REASONS.USER_REJECTED}
    await send(client, "participant_left", call_id, now, **line)
    with caplog.at_level(logging.WARNING, logger="common.calls.service"):
        await send(client, "room_started", call_id, now + 2)
    assert f"call {call_id} is busy but its room is alive (room_started); ending it" in (
        caplog.text
    )
