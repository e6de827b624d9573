"""An agent whose provider refuses it (OpenAI's key revoked, its quota spent; Cartesia's
credits) fails every call it is sent to: a campaign went on through its whole list at its
pace, each callee answering to silence and a hang-up. CAMPAIGN_PAUSE_AFTER_AGENT_FAULTS
(10) calls ended by their agent's failure in a row pause it.

The real app and its campaigns on the embedded sandbox; the test plays LiveKit's signed
webhooks for each call, its room finishing with the failure the agent records on it."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import FAST, all_recipients, campaign_of, create, us
from tests.integration.test_webhooks import event_json, post, sign

FAILURE = "the agent's session failed: llm (openai) APIStatusError 429"


async def play_calls(
    client: TestClient[Any, Any], campaign_id: str, ends: list[str | None], stop: str
) -> int:
    """Answer each call the campaign places, in turn, its room finishing with the failure
    `ends` names for it (None: the agent talked with the callee, who hung up), until the
    campaign's status is `stop`: how many calls were played."""
    played: set[str] = set()
    async with asyncio.timeout(60):
        while (await campaign_of(client, campaign_id))["status"] != stop:
            recipients = await all_recipients(client, campaign_id)
            calls = [a["call_id"] for r in recipients for a in r["attempts"] if a["call_id"]]
            for call_id in [c for c in calls if c not in played]:
                if not await dialled(client, call_id):
                    continue  # LiveKit's webhooks follow the dial LiveKit took (see dialled)
                failure = ends[len(played)]
                metadata = (
                    json.dumps({"outcome": "failed", "reason": failure, "spoke": False})
                    if failure
                    else ""
                )
                for body in [
                    event_json(
                        "participant_joined", call_id, attributes={"sip.callStatus": "active"}
                    ),
                    event_json(
                        "participant_left", call_id, attributes={"sip.callStatus": "hangup"}
                    ),
                    event_json("room_finished", call_id, metadata=metadata),
                ]:
                    assert await post(client, body, sign(body)) == 200
                played.add(call_id)
            await asyncio.sleep(0.05)
    return len(played)


async def dialled(client: TestClient[Any, Any], call_id: str) -> bool:
    """Whether the call's dial was taken (its timeline's `dialed`). Its attempt names it as
    its row is written, before the dial: the webhooks played then, on a loaded machine,
    found a call not dialled yet, whose room_finished (and the agent's failure it carries)
    waits for the dial, and the call was settled by its grace as one no agent came to."""
    shown = await (await client.get(f"/calls/{call_id}")).json()
    return "dialed" in [entry["event"] for entry in shown["timeline"]]


async def campaign_app(start_app: AppFactory, **settings: Any) -> TestClient[Any, Any]:
    client = await start_app(
        sandbox_time_scale=100.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST, **settings
    )
    client.app[SANDBOX].webhook_url = None  # the test posts LiveKit's webhooks
    return client


def body(count: int) -> dict[str, Any]:
    return {
        "name": "agent faults",
        "recipients": [{"phone_number": us(n, "7760")} for n in range(count)],
        "pacing": {"calls_per_second": 100, "max_concurrent": 1},  # one after the other
    }


async def test_a_campaign_whose_agent_keeps_failing_is_paused(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="common.campaigns.service")
    client = await campaign_app(start_app)
    campaign_id = (await create(client, body(25)))["campaign_id"]
    played = await play_calls(client, campaign_id, [FAILURE] * 25, "paused")

    assert 10 <= played < 25
    states = [r["state"] for r in await all_recipients(client, campaign_id)]
    assert states.count("pending") >= 25 - played - 1
    [said] = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert said.startswith(
        f"campaign {campaign_id} paused: its last 10 calls ended by their agent's failure"
        f" (the last, call call-"
    )
    assert FAILURE in said and "OPENAI_API_KEY" in said
    assert said.endswith(
        f"resume it (POST /campaigns/{campaign_id}/resume) once the agent's providers work"
    )


async def test_a_call_the_agent_talked_through_starts_the_count_again(
    start_app: AppFactory,
) -> None:
    client = await campaign_app(start_app)
    campaign_id = (await create(client, body(19)))["campaign_id"]
    ends: list[str | None] = [FAILURE] * 9 + [None] + [FAILURE] * 9
    assert await play_calls(client, campaign_id, ends, "completed") == 19


async def test_with_the_setting_0_a_campaign_is_never_paused(start_app: AppFactory) -> None:
    client = await campaign_app(start_app, campaign_pause_after_agent_faults=0)
    campaign_id = (await create(client, body(12)))["campaign_id"]
    assert await play_calls(client, campaign_id, [FAILURE] * 12, "completed") == 12
