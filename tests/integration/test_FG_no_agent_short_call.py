"""A call no agent came to, whose callee answered and hung up on the silence before
AGENT_JOIN_TIMEOUT_S: it read `completed` (no reason, its report pending for 10 minutes),
a campaign never called them again, and nothing told the operator, while a callee who waited
the 20 s made the same call `failed` with an ERROR. Its end now finds no sign of an agent (no
report, no agent's participant joining or leaving, here or on another server) and, once the
room's grace found none either, settles it `failed`, said at ERROR as the other is."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit.protocol import models

from handlers.keys import CALLS, SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_call_results import answered, post_report
from tests.integration.test_webhooks import event_json, line_joins, place, post, sign

Client = TestClient[Any, Any]
HUNG_UP = models.DisconnectReason.CLIENT_INITIATED
NO_AGENT_BEFORE_END = (
    "no agent joined the call before it ended (is an agent worker running, registered as"
    " AGENT_NAME, with room for another job?); the callee had answered and heard nobody"
)
NO_AGENT_NUMBER = "+14155550404"  # the sandbox plays no agent for it: no report comes


async def agent_joins(client: Client, call_id: str) -> None:
    """Our agent's participant joins the call's room, as LiveKit says of it."""
    body = event_json(
        "participant_joined",
        call_id,
        identity=f"agent-{call_id}",
        participant_kind=models.ParticipantInfo.Kind.AGENT,
        attributes={"lk.agent.name": client.app[SETTINGS].agent_name},
    )
    assert await post(client, body, sign(body)) == 200


async def hangs_up_answered(client: Client, call_id: str) -> None:
    """The callee's line, answered, hangs up; its room finishes."""
    left = event_json(
        "participant_left", call_id, attributes={"sip.callStatus": "hangup"}, reason=HUNG_UP
    )
    assert await post(client, left, sign(left)) == 200
    finished = event_json("room_finished", call_id)
    assert await post(client, finished, sign(finished)) == 200


async def quiet_app(start_app: AppFactory, **settings: Any) -> Client:
    """The real app whose sandbox posts no webhooks of its own (test_webhooks.quiet_app)."""
    client = await start_app(sandbox_time_scale=100.0, **settings)
    client.app[SANDBOX].webhook_url = None
    return client


async def shown(client: Client, call_id: str) -> dict[str, Any]:
    call: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
    return call


async def test_a_callee_hanging_up_on_silence_before_the_agent_check_is_failed(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await quiet_app(start_app)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await hangs_up_answered(client, call_id)
    call = await shown(client, call_id)
    assert (call["status"], call["reason"]) == ("failed", NO_AGENT_BEFORE_END)
    assert call["answered_at"] is not None and call["report_status"] == "unavailable"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"call {call_id} ended: {NO_AGENT_BEFORE_END}"]


async def test_its_agent_joining_keeps_a_short_call_completed(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_joins(client, call_id)
    await hangs_up_answered(client, call_id)
    call = await shown(client, call_id)
    assert (call["status"], call["reason"]) == ("completed", None)
    joined = [e for e in call["timeline"] if e["event"] == "participant_joined"]
    assert [e["detail"].get("agent_joined") for e in joined] == [None, True]


async def test_its_agents_report_keeps_a_short_call_completed(start_app: AppFactory) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    assert await post_report(client, answered(call_id)) == 200
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "completed"


async def test_an_agents_report_within_the_grace_keeps_it_completed(
    start_app: AppFactory,
) -> None:
    """The agent's reports, retried after an outage, may come after the room finished: the
    grace waits for them as it waits for a late answer."""
    client = await quiet_app(start_app, calls_settle_grace_s=1.0)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "in_progress"  # not frozen on a guess
    assert await post_report(client, answered(call_id)) == 200

    async def settled() -> bool:
        return bool((await shown(client, call_id))["status"] != "in_progress")

    await asyncio.sleep(1.2)
    await wait_for(settled, timeout=5)
    assert (await shown(client, call_id))["status"] == "completed"


async def test_without_the_agent_check_a_short_call_stays_completed(
    start_app: AppFactory,
) -> None:
    """AGENT_JOIN_TIMEOUT_S=0 (no check of the agent: another program's agents) keeps the
    old reading."""
    client = await quiet_app(start_app, agent_join_timeout_s=0.0)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "completed"


async def test_with_a_grace_it_is_not_failed_before_the_agents_reports_could_come(
    start_app: AppFactory,
) -> None:
    """A grace of 0.2 s waits 40 s (REPORTS_RETRY_S) for an agent's sign, not 0.2 s: reports
    refused in an outage come again up to that far apart."""
    client = await quiet_app(start_app, calls_settle_grace_s=0.2)
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await hangs_up_answered(client, call_id)
    await asyncio.sleep(1.0)
    assert (await shown(client, call_id))["status"] == "in_progress"
    assert await post_report(client, answered(call_id)) == 200
    await client.app[CALLS].reap()  # the reaper's pass decides as the timer would
    assert (await shown(client, call_id))["status"] == "completed"
