"""LiveKit's clock 45 s behind this server's (under the minute past which LiveKit refuses our
tokens, so calls are placed): its webhooks' `createdAt` dated every hang-up that far early. A
3 s conversation read `talk_s` 0 (its `ended_at` its answer) and its callee's
`participant_left` line came 40 s before the call was placed. Each webhook's signature says
when LiveKit signed it, by the same clock: its events are now read on this server's clock,
and the log says the clocks disagree."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import logging
import time
from typing import Any

import jwt
import pytest
from livekit.protocol import models

from common.livekit import skew
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered, post_report
from tests.integration.test_FT_agent_clock_behind import early_in_a_second
from tests.integration.test_webhooks import event_json, place, post, quiet_app

BEHIND_S = 45  # LiveKit's clock this far behind this server's


def livekit_now() -> int:
    return int(time.time()) - BEHIND_S


def sent_by_livekit(body: bytes) -> tuple[bytes, str]:
    """`body` as a LiveKit whose clock is BEHIND_S behind sends it: made and signed now by
    its clock (its token valid 5 minutes from then, as LiveKit signs webhooks)."""
    event = json.loads(body)
    event["createdAt"] = str(livekit_now())
    body = json.dumps(event).encode()
    claims = {
        "iss": DEV_API_KEY,
        "nbf": livekit_now(),
        "exp": livekit_now() + 300,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    return body, jwt.encode(claims, DEV_API_SECRET, algorithm="HS256")


def at(shown: dict[str, Any], name: str) -> float:
    return dt.datetime.fromisoformat(shown[name]).timestamp()


async def test_a_calls_times_hold_with_livekits_clock_minutes_behind(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(skew, "SPAN_S", 0.0)  # its webhooks have kept coming long enough
    client = await quiet_app(start_app)
    call_id = await place(client)
    joined = event_json("participant_joined", call_id, attributes={"sip.callStatus": "dialing"})
    # LiveKit signs in whole seconds: signed late in one (x.98 s) and 30 ms on its way, this
    # first webhook read 46 s behind, and the log said so (its whole-second precision).
    await early_in_a_second()
    with caplog.at_level(logging.WARNING, logger="common.livekit.skew"):
        assert await post(client, *sent_by_livekit(joined)) == 200
    answer = time.time()
    assert await post_report(client, answered(call_id)) == 200
    await asyncio.sleep(3.0)  # they talk
    hang_up = time.time()
    hung_up = int(models.DisconnectReason.CLIENT_INITIATED)
    left = event_json(
        "participant_left", call_id, attributes={"sip.callStatus": "hangup"}, reason=hung_up
    )
    for body in (left, event_json("room_finished", call_id)):
        assert await post(client, *sent_by_livekit(body)) == 200
    shown: dict[str, Any] = await (await client.get(f"/calls/{call_id}")).json()
    assert shown["status"] == "completed", shown
    # Around the time the test saw them talk (a loaded machine's sleep runs long), to
    # LiveKit's whole second; the hang-up dated 45 s early read talk_s 0.
    talked = hang_up - answer
    assert talked - 1.2 <= shown["talk_s"] <= talked + 2.0, (shown, talked)
    assert at(shown, "ended_at") - at(shown, "answered_at") >= 2.0, shown
    lines = {line["event"]: line for line in shown["timeline"]}
    assert at(lines["participant_left"], "at") >= at(shown, "answered_at"), shown["timeline"]
    said = [r.getMessage() for r in caplog.records if r.name == "common.livekit.skew"]
    # 46 s when the first webhook's way took it into LiveKit's next second (a loaded machine)
    readings = tuple(f"LiveKit's clock is {s} s behind" for s in (BEHIND_S, BEHIND_S + 1))
    assert len(said) == 1 and said[0].startswith(readings), said
