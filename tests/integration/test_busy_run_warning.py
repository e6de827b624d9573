"""A trunk its carrier refuses (its credentials, its account, its call rate) fails every
call, and LiveKit says each as a busy line (USER_REJECTED, no SIP code: livekit/sip
classifyInviteError): every call `busy`, each one INFO status line, and nothing told the
operator that no call reached anyone. Ten calls in a row ended busy is a WARNING."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from common.calls.service import BUSY_RUN_WARN
from tests.conftest import AppFactory
from tests.helpers import wait_for, warnings_saying
from tests.integration.test_call_outcomes import place, wait_final

BUSY = "+14155550486"  # the sandbox's busy line
ANSWERED = "+14155550123"
SAID = "calls all ended busy"


def busy_runs_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return warnings_saying(caplog, SAID)


async def calls_to(client: Any, numbers: list[str]) -> None:
    """Each placed and settled before the next (the order they end in is the order given)."""
    for number in numbers:
        await wait_final(client, await place(client, number))


async def test_ten_busy_calls_in_a_row_say_the_trunk_may_be_refused(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app()
    await calls_to(client, [BUSY] * (BUSY_RUN_WARN - 1))
    assert busy_runs_said(caplog) == []
    await calls_to(client, [BUSY, BUSY])

    async def said_once() -> bool:  # the events' subscribers run after each call settled
        return len(busy_runs_said(caplog)) >= 1

    await wait_for(said_once, timeout=10)
    [said] = busy_runs_said(caplog)  # once a minute, not per call
    assert said.startswith(f"the last {BUSY_RUN_WARN} calls all ended busy (the last, call ")
    assert "SIP_OUTBOUND_TRUNK_ID" in said and BUSY not in said


async def test_busy_calls_among_others_are_no_warning(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app()
    await calls_to(client, [BUSY] * (BUSY_RUN_WARN - 1) + [ANSWERED] + [BUSY] * 5)
    assert busy_runs_said(caplog) == []
