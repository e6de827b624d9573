"""An agent whose clock agrees with the server's, and a report of it that took a few seconds
to arrive (a loaded server, a slow proxy, a lost SYN): its `at` was moved by the whole delay,
taken for the agent's clock being behind. A call that rang 1 s read `ring_s` ~4.5 and its
talk that much shorter. A report's own signing time is no measure of the clocks alone: one
arrives late, never early, so the agent's clock is taken as behind only when its reports
have said so for a while (as LiveKit's webhooks must); one ahead is one whatever the delay."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import time
from typing import Any

import jwt
import pytest
from livekit.protocol import models

from common.contracts import REPORTS_PATH
from common.livekit import skew
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_call_results import Client, answered
from tests.integration.test_webhooks import event_json, line_joins, place, post, quiet_app, sign

DELAY_S = 3.5  # the report's time in transit


async def post_signed_at(client: Client, sent: Any, call_id: str, signed_at: float) -> int:
    """`sent` posted as an agent in sync with the server that signed it at `signed_at`."""
    body = json.dumps(sent).encode()
    claims = {
        "iss": DEV_API_KEY,
        "sub": f"agent-{call_id}",
        "nbf": int(signed_at),
        "exp": int(signed_at) + 300,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "video": {"room": call_id},
    }
    token = jwt.encode(claims, DEV_API_SECRET, algorithm="HS256")
    headers = {"Authorization": f"Bearer {token}"}
    resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
    return resp.status


async def ring_and_answer_late(client: Client) -> dict[str, Any]:
    """A call that rings 1 s, whose answer report arrives DELAY_S after it was signed, and
    talks DELAY_S + 1 s: the call as the server shows it."""
    call_id = await place(client)
    await line_joins(client, call_id)
    await asyncio.sleep(1.0)  # it rings
    answered_at = time.time()
    await asyncio.sleep(DELAY_S)  # the report, signed at the answer, on its way
    report = answered(call_id, at=answered_at)
    assert await post_signed_at(client, report, call_id, answered_at) == 200
    await asyncio.sleep(1.0)
    hung_up = int(models.DisconnectReason.CLIENT_INITIATED)
    left = event_json(
        "participant_left", call_id, attributes={"sip.callStatus": "hangup"}, reason=hung_up
    )
    for body in (left, event_json("room_finished", call_id)):
        assert await post(client, body, sign(body)) == 200
    shown: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] == "completed", shown
    return shown


async def test_a_late_report_of_a_server_just_started_keeps_its_time(
    start_app: AppFactory,
) -> None:
    client = await quiet_app(start_app)
    shown = await ring_and_answer_late(client)
    assert 0.8 <= shown["ring_s"] <= 2.2, shown
    assert shown["talk_s"] >= DELAY_S, shown


async def test_a_late_report_among_prompt_ones_keeps_its_time(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(skew, "SPAN_S", 0.0)  # the agents' reports have kept coming long enough
    client = await quiet_app(start_app)
    earlier = await place(client)
    await line_joins(client, earlier)
    prompt = answered(earlier, at=time.time())
    assert await post_signed_at(client, prompt, earlier, time.time()) == 200
    shown = await ring_and_answer_late(client)
    assert 0.8 <= shown["ring_s"] <= 2.2, shown
    assert shown["talk_s"] >= DELAY_S, shown
