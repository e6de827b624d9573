"""LiveKit's own word for a trunk failure: the callee's SIP participant leaves unanswered with
the disconnect reason SIP_TRUNK_FAILURE (under which livekit/sip's classifyInviteError files a
carrier's 5xx, a DNS or network error reaching the trunk's address, the trunk's
calls-per-second or concurrent-call limit). Each such call failed with only its INFO status
line: the WARNING that says a trunk failing every call (33de71f) knew only SIP codes and a
line dropped with no reason."""

from __future__ import annotations

import logging

import pytest
from livekit.protocol import models

from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_webhooks import event_json, line_joins, place, post, quiet_app, sign


async def test_a_line_livekit_says_the_trunk_failed_is_a_trunk_warning(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await quiet_app(start_app)
    call_id = await place(client)
    await line_joins(client, call_id)
    left = event_json(
        "participant_left",
        call_id,
        attributes={"sip.callStatus": "dialing"},
        reason=models.DisconnectReason.SIP_TRUNK_FAILURE,
    )
    assert await post(client, left, sign(left)) == 200
    call = await (await client.get(f"/calls/{call_id}")).json()
    assert (call["status"], call["reason"]) == ("failed", "sip_trunk_failure")

    async def warned() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING and "no call reaches anyone" in r.getMessage()
        ]

    await wait_for(warned, timeout=5)
    [line] = await warned()
    assert f"call {call_id} failed: sip_trunk_failure; " in line
    assert "trunk" in line.split("; ", 1)[1]


async def test_a_busy_or_unanswered_line_is_no_trunk_warning(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The callee's answers (USER_REJECTED, USER_UNAVAILABLE) stay the call's status line."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await quiet_app(start_app)
    for reason in (models.DisconnectReason.USER_REJECTED, models.DisconnectReason.USER_UNAVAILABLE):
        call_id = await place(client)
        await line_joins(client, call_id)
        left = event_json(
            "participant_left", call_id, attributes={"sip.callStatus": "ringing"}, reason=reason
        )
        assert await post(client, left, sign(left)) == 200

        async def ended(call_id: str = call_id) -> bool:
            line = f"call {call_id} "
            return any(line in r.getMessage() and " -> " in r.getMessage() for r in caplog.records)

        await wait_for(ended, timeout=5)
    assert not [r for r in caplog.records if "no call reaches anyone" in r.getMessage()]
