"""A signed webhook about a room that is not one of our calls, named as LiveKit names an
inbound SIP call's room (`<roomPrefix>_<caller>_<random>`, with the "call-" prefix of LiveKit's
own dispatch-rule example), logs the caller's number masked, as every number in the logs is.

Seen on the real server at LOG_LEVEL=DEBUG, a signed room_started for `call-_+14155550188_XyZ12`:
`webhook room_started for unknown room call-_+14155550188_XyZ12 ignored`, the number whole, for
every webhook of every inbound call of a LiveKit project that also takes calls in.
"""

from __future__ import annotations

import logging

import pytest

from tests.conftest import AppFactory
from tests.integration.test_webhooks import event_json, post, quiet_app, sign

INBOUND_ROOM = "call-_+14155550188_XyZ12"


async def test_an_inbound_calls_room_is_logged_with_its_number_masked(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    caplog.set_level(logging.DEBUG, logger="common.calls.service")
    for kind in ("room_started", "participant_joined", "room_finished"):
        extra = {"attributes": {"sip.phoneNumber": "+14155550188"}} if "participant" in kind else {}
        body = event_json(kind, INBOUND_ROOM, **extra)
        assert await post(client, body, sign(body)) == 200
    lines = [r.getMessage() for r in caplog.records if "unknown room" in r.getMessage()]
    assert len(lines) == 3, caplog.text
    assert all("call-_+•••••••0188_XyZ12" in line for line in lines), lines
    assert "4155550188" not in caplog.text
    assert "5550188" not in caplog.text
