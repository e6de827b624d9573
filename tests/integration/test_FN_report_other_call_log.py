"""POST /agent/reports signed for one room, about another call: 409, and a WARNING that
named the token's room claim as it came (any JSON value: a list of 60 call ids was logged
whole, 1.3 KB a line) once per refused post (a misrouted agent retrying: 50 posts, 50
lines). The room is now quoted and cut like the report's call id, and the line said once a
minute with how many were held back. Real signed reports, the real app."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import time
from typing import Any

import jwt
import pytest

from common.contracts import REPORTS_PATH
from common.settings import DEV_API_KEY, DEV_API_SECRET
from handlers.keys import REFUSALS
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered
from tests.integration.test_webhooks import Client, place, quiet_app


def signed_for(body: bytes, room: object) -> str:
    """A valid report token whose video grant names `room`, whatever JSON value it is."""
    now = int(time.time())
    claims = {
        "iss": DEV_API_KEY,
        "nbf": now - 5,
        "exp": now + 300,
        "sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
        "video": {"room": room},
    }
    return jwt.encode(claims, DEV_API_SECRET, algorithm="HS256")


async def post_for(client: Client, call_id: str, room: object) -> int:
    body = json.dumps(answered(call_id, 0)).encode()
    headers = {"Authorization": "Bearer " + signed_for(body, room)}
    resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
    return resp.status


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "token covers" in r.getMessage()]


async def test_the_room_claim_is_quoted_and_cut(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    with caplog.at_level(logging.WARNING, logger="handlers.reports"):
        assert await post_for(client, call_id, ["call-000000000000"] * 60) == 409
    (line,) = lines(caplog)
    assert len(line) < 200, line
    assert line.startswith(f"agent report for call {call_id!r} refused: its token covers ['")


async def test_a_room_with_line_breaks_is_one_quoted_line(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    room = "call-111111111111\nWARNING forged line\u202e"
    with caplog.at_level(logging.WARNING, logger="handlers.reports"):
        assert await post_for(client, call_id, room) == 409
    (line,) = lines(caplog)
    assert line.endswith("its token covers 'call-111111111111\ufffdWARNING forged line\ufffd'")


async def test_repeated_refusals_are_said_once_a_minute(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client)
    clock = [1000.0]
    client.app[REFUSALS].clock = lambda: clock[0]
    with caplog.at_level(logging.WARNING, logger="handlers.reports"):
        for _ in range(50):
            assert await post_for(client, call_id, "call-222222222222") == 409
        clock[0] += 61
        assert await post_for(client, call_id, "call-222222222222") == 409
    said: list[Any] = lines(caplog)
    assert len(said) == 2, said
    assert said[1].endswith("'call-222222222222' (49 more like it in the last 61 s)")
