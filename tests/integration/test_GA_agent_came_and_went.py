"""An agent that joined a call's room and left it again (its process died) before the wait
for an agent (AGENT_JOIN_TIMEOUT_S) was over: the wait asked LiveKit who was in the room,
found no agent, and ended the call `failed`, "no agent joined the call within 20 s", with
the ERROR that says to start agent workers, though one had come. The call is the wait's
after an agent left (AGENT_GONE_GRACE_S, `completed` with its reason). Seen in CI with
SANDBOX_TIME_SCALE=0: 0666's agent died while the wait's questions were on their way.

Its sign may be only its participant_left (its participant_joined webhook lost), and may
have reached another server on the database; the wait asks both."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit.protocol import models

from common.calls import service as service_module
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_FG_no_agent_short_call import NO_AGENT_NUMBER, quiet_app, shown
from tests.integration.test_FM_agent_left_with_its_room import agent_leaves
from tests.integration.test_webhooks import line_joins, place

Client = TestClient[Any, Any]
DIED = models.DisconnectReason.SIGNAL_CLOSE
WAIT_S = 0.01  # AGENT_JOIN_TIMEOUT_S, x the quiet app's time scale 100: 1 s


async def checked_beside(client: Client, call_id: str) -> None:
    """A call placed after `call_id`, no agent's sign posted for it: once its own wait ended
    it `failed`, that of `call_id` (due before it) has asked its questions too."""
    control = await place(client, NO_AGENT_NUMBER)

    async def failed() -> bool:
        return bool((await shown(client, control))["status"] == "failed")

    await wait_for(failed, timeout=30)
    assert (await shown(client, control))["reason"].startswith("no agent joined")


@pytest.mark.parametrize("heard_by", ["this server", "another server"])
async def test_an_agent_that_came_and_went_is_not_a_call_no_agent_joined(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, heard_by: str
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await quiet_app(start_app, agent_join_timeout_s=WAIT_S)
    # the other shares the database (start_app's settings: one calls.db per test)
    other = await quiet_app(start_app) if heard_by == "another server" else client
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_leaves(other, call_id, DIED)  # its participant_joined never came
    await checked_beside(client, call_id)
    call = await shown(client, call_id)
    assert call["status"] not in ("failed", "completed"), (call["status"], call["reason"])
    assert not [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and call_id in r.getMessage()
    ]


async def test_a_stop_does_not_wait_out_the_wait_after_an_agent_left(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait after a call's agent left (AGENT_GONE_GRACE_S, 5 s) was waited for by a stop
    as a room deletion is (up to ROOM_CLOSE_WAIT_S, 5 s): every stop with an agent just gone
    took 5 s more. It is cancelled as the other waits are (the next start's reaper asks)."""
    monkeypatch.setattr(service_module, "ROOM_CLOSE_WAIT_S", 600.0)
    client = await quiet_app(start_app)  # time scale 100: the wait is 500 s
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_leaves(client, call_id, DIED)
    service = client.app[CALLS]
    [wait] = [t for t in service._background if t.get_name() == f"agent-gone-{call_id}"]
    await asyncio.wait_for(service.aclose(), timeout=30)
    assert wait.cancelled()
