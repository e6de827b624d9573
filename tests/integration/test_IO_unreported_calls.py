"""Agents whose reports cannot reach the server (PUBLIC_BASE_URL wrong, or what forwards it
broken after start-up) still join and talk: each call ended `completed`, an INFO status
line, with no transcript, verdict nor analysis, and the server said nothing once its
start-up check was over. Five answered calls in a row ended so is a WARNING naming where the
agents post."""

from __future__ import annotations

import logging

import pytest

from common.calls.unreported import UNREPORTED_RUN_WARN
from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import wait_for, warnings_saying
from tests.integration.test_call_results import post_report, report
from tests.integration.test_FG_no_agent_short_call import (
    NO_AGENT_NUMBER,
    Client,
    agent_joins,
    hangs_up_answered,
    quiet_app,
    shown,
)
from tests.integration.test_webhooks import line_joins, place

SAID = "answered calls all ended with no report from their agents"


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return warnings_saying(caplog, SAID)


async def answered_call(client: Client, *, reported: bool = False) -> str:
    """A call answered, joined by its agent, hung up: its agent's reports never came (or,
    `reported`, its answering-machine verdict did)."""
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_joins(client, call_id)
    if reported:
        verdict = report(call_id, 0, "amd", amd={"category": "human"})
        assert await post_report(client, verdict) == 200
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "completed"
    return call_id


async def test_answered_calls_with_no_report_in_a_row_say_where_reports_go(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = await quiet_app(start_app)
    for _ in range(UNREPORTED_RUN_WARN - 1):
        await answered_call(client)
    await answered_call(client, reported=True)  # one reported: the count starts again
    for _ in range(UNREPORTED_RUN_WARN - 1):
        await answered_call(client)
    assert said(caplog) == []
    last = await answered_call(client)

    async def said_once() -> bool:  # the events' subscribers run after each call settled
        return len(said(caplog)) >= 1

    await wait_for(said_once, timeout=10)
    [line] = said(caplog)
    assert line.startswith(f"the last {UNREPORTED_RUN_WARN} {SAID} (")
    assert f"call {last})" in line and client.app[SETTINGS].report_url in line
    assert "PUBLIC_BASE_URL" in line
