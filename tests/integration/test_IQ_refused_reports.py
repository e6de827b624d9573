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
from tests.integration.test_FG_no_agent_short_call import (
    quiet_app,
)
from tests.integration.test_IO_unreported_calls import answered_call, said, the_line_said


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
            await answered_call(client, verdict_answered=503)
    # Their reports reached this server: the count starts after them.
    for _ in range(UNREPORTED_RUN_WARN - 1):
        await answered_call(client)
    assert said(caplog) == []
    last = await answered_call(client)
    assert f"call {last})" in await the_line_said(caplog)
