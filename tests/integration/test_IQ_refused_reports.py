"""Answered calls whose agents' reports this server refused (503: its database) are no sign
that the reports do not reach it.

Found on a full 2 MB tmpfs under calls.db: the agents' reports were answered 503 while the
disk was full, the calls settled once it had room again, before the agents sent them again,
and the server said 'the last 5 answered calls all ended with no report from their agents
… agents post their reports to http://127.0.0.1:8018/agent/reports (PUBLIC_BASE_URL +
/agent/reports) … check PUBLIC_BASE_URL': the wrong thing to check, the reports had reached
it. The same after any database outage (a PostgreSQL failover) longer than an agent's
retries, whose spool sends the reports again 10 s apart."""

from __future__ import annotations

import logging

import pytest

from common.calls.unreported import UNREPORTED_RUN_WARN
from common.storage.base import DatabaseError
from handlers.keys import CALLS
from tests.conftest import AppFactory
from tests.helpers import wait_for
from tests.integration.test_call_results import post_report, report
from tests.integration.test_FG_no_agent_short_call import (
    NO_AGENT_NUMBER,
    Client,
    agent_joins,
    hangs_up_answered,
    quiet_app,
    shown,
)
from tests.integration.test_IO_unreported_calls import answered_call, said
from tests.integration.test_webhooks import line_joins, place


async def refused_call(client: Client) -> None:
    """A call answered, joined by its agent, whose verdict report this server refused (503),
    then hung up."""
    call_id = await place(client, NO_AGENT_NUMBER)
    await line_joins(client, call_id)
    await agent_joins(client, call_id)
    verdict = report(call_id, 0, "amd", amd={"category": "human"})
    assert await post_report(client, verdict) == 503
    await hangs_up_answered(client, call_id)
    assert (await shown(client, call_id))["status"] == "completed"


async def test_calls_whose_reports_were_refused_are_not_said_unreported(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    client = await quiet_app(start_app)

    async def database_down(*_args: object) -> None:
        raise DatabaseError("database or disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(client.app[CALLS], "record_reports", database_down)
        for _ in range(UNREPORTED_RUN_WARN):
            await refused_call(client)
    # Their reports reached this server: the count starts after them.
    for _ in range(UNREPORTED_RUN_WARN - 1):
        await answered_call(client)
    assert said(caplog) == []
    last = await answered_call(client)

    async def said_once() -> bool:  # the events' subscribers run after each call settled
        return len(said(caplog)) >= 1

    await wait_for(said_once, timeout=10)
    [line] = said(caplog)
    assert f"call {last})" in line
