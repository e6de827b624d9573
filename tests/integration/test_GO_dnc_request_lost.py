"""A callee's request not to be called again that the server did not record is an ERROR that
says what to do.

The agent's add_to_do_not_call tool sends a `do_not_call` report; only the server puts the
number on the list. When the server refused it for good (its 404 for a call it does not know:
agents whose PUBLIC_BASE_URL leads to another deployment), the agent logged the same WARNING
as for any refused report ("do_not_call report #1 refused by the server, not retried"), and
nothing said that the callee, who had asked, would be called again unless someone listed the
number by hand. Now an ERROR names the call and POST /dnc.

The agent's real ReportSender, signing with the dev keys, posts to the real app.
"""

from __future__ import annotations

import logging
import time

import pytest

from agent.reporting import ReportSender, RetryPolicy
from common.contracts import REPORTS_PATH
from common.settings import DEV_API_KEY, DEV_API_SECRET
from tests.conftest import AppFactory
from tests.integration.test_webhooks import Client, place, quiet_app

FAST = RetryPolicy(first_delay_s=0.01, max_delay_s=0.05, attempt_timeout_s=5.0, deadline_s=10.0)
LOST = "the callee asked not to be called again, and the server was not told"


async def ask_not_to_be_called(client: Client, call_id: str) -> ReportSender:
    sender = ReportSender(
        str(client.make_url(REPORTS_PATH)),
        call_id,
        DEV_API_KEY,
        DEV_API_SECRET,
        retry=FAST,
        linger_s=0,
    )
    sender.answered(time.time())
    sender.do_not_call(time.time())
    await sender.aclose(10.0)
    return sender


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name == "agent.reporting"
    ]


async def test_a_refused_do_not_call_report_is_an_error_naming_post_dnc(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    unknown = "call-0000deadbeef"  # a call of another deployment's database
    with caplog.at_level(logging.WARNING, logger="agent.reporting"):
        sender = await ask_not_to_be_called(client, unknown)
    assert sender.refused == [0, 1] and sender.delivered == []
    (line,) = errors(caplog)
    assert line.startswith(f"call {unknown}: {LOST} (refused for good, HTTP 404)")
    assert line.endswith("put the call's number on the do-not-call list with POST /dnc")


async def test_a_recorded_request_says_nothing_more(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await quiet_app(start_app)
    call_id = await place(client, "+14155550123")
    with caplog.at_level(logging.WARNING, logger="agent.reporting"):
        sender = await ask_not_to_be_called(client, call_id)
    assert sender.delivered == [0, 1]
    assert errors(caplog) == []
    listed = await (await client.get("/dnc")).json()
    entries = [(e["phone_number"], e["source"], e["call_id"]) for e in listed["numbers"]]
    assert entries == [("+14155550123", "agent", call_id)], listed
