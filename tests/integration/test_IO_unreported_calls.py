"""Agents whose reports cannot reach the server (PUBLIC_BASE_URL wrong, or what forwards it
broken after start-up) still join and talk: each call ended `completed`, an INFO status
line, with no transcript, verdict nor analysis, and the server said nothing once its
start-up check was over. Five answered calls in a row ended so is a WARNING naming where the
agents post."""

from __future__ import annotations

import logging
from functools import partial

import pytest
from livekit.protocol import models

import server
from common.calls import service
from common.calls.service import AGENT_GONE
from common.calls.unreported import UNREPORTED_RUN_WARN, warn_of_unreported_runs
from handlers.keys import EVENTS, SETTINGS
from server import SANDBOX
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
from tests.integration.test_webhooks import (
    agent_left,
    event_json,
    line_joins,
    place,
    post,
    sign,
)

ACTIVE = {"sip.callStatus": "active"}  # the callee answered
SAID = "answered calls all ended with no report from their agents"


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return warnings_saying(caplog, SAID)


async def the_line_said(caplog: pytest.LogCaptureFixture) -> str:
    """The one WARNING, once said (the events' subscribers run after each call settled)."""

    async def said_once() -> bool:
        return len(said(caplog)) >= 1

    await wait_for(said_once, timeout=10)
    [line] = said(caplog)
    return line


async def answered_call(client: Client, *, verdict_answered: int | None = None) -> str:
    """A call answered, joined by its agent, hung up: its agent's reports never came (or its
    answering-machine verdict did, answered `verdict_answered`: 200, or 503 when this
    server's database refused it)."""
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_joins(client, call_id)
    if verdict_answered is not None:
        verdict = report(call_id, 0, "amd", amd={"category": "human"})
        assert await post_report(client, verdict) == verdict_answered
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
    await answered_call(client, verdict_answered=200)  # one reported: the count starts again
    for _ in range(UNREPORTED_RUN_WARN - 1):
        await answered_call(client)
    assert said(caplog) == []
    last = await answered_call(client)
    line = await the_line_said(caplog)
    assert line.startswith(f"the last {UNREPORTED_RUN_WARN} {SAID} (")
    assert f"call {last})" in line and client.app[SETTINGS].report_url in line
    assert "PUBLIC_BASE_URL" in line


async def test_calls_whose_agent_died_say_nothing_of_where_reports_go(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent whose process dies once it joined (a crash at its start, each call) sends no
    report: each call ends `completed`, its reason that its agent left the call. The server
    knows why nothing was reported, and the WARNING sent the operator to PUBLIC_BASE_URL and
    what forwards it, which work."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(service, "AGENT_GONE_GRACE_S", 0.002)  # x the time scale 100: 0.2 s
    # Two in a row warn here (five in a real server): the same count, sooner.
    monkeypatch.setattr(
        server, "warn_of_unreported_runs", partial(warn_of_unreported_runs, least=2)
    )
    client = await quiet_app(start_app)
    for _ in range(3):
        call_id = await place(client, NO_AGENT_NUMBER)
        answered = event_json("participant_joined", call_id, attributes=ACTIVE)
        assert await post(client, answered, sign(answered)) == 200
        await agent_joins(client, call_id)
        died = agent_left(call_id, models.DisconnectReason.CLIENT_INITIATED)
        assert await post(client, died, sign(died)) == 200
        client.app[SANDBOX].rooms[call_id].agent_present = False  # LiveKit lists it no more

        async def ended(call_id: str = call_id) -> bool:
            return bool((await shown(client, call_id))["status"] == "completed")

        await wait_for(ended, timeout=10)
        assert (await shown(client, call_id))["reason"] == AGENT_GONE
    await client.app[EVENTS].wait_idle()
    assert said(caplog) == []
