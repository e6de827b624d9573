"""Calls whose dial cannot be marked (the database down, its pool used up) are logged once a
minute, not one ERROR each.

Seen on the real server.py on PostgreSQL (pool of 10) under `ulimit -n 256`, 300 calls at
once: 102 were answered 503 `calls database unavailable: it did not answer in time`, as
they should be, and 88 ERROR lines said the same thing call after call (`could not mark its
dial as started, so it is not dialled: database did not answer in time (no connection
free)`), 10 more `is dialing but its dial details were not recorded`: a database outage
writes one line per call placed during it. Now once a minute per kind, with how many were
held back, as the other outage lines are.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from common.storage.base import DatabaseStalled
from handlers.keys import STORE
from tests.conftest import AppFactory

NOT_MARKED = "could not mark its dial as started"


async def test_dials_that_cannot_be_marked_log_one_line_not_one_each(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    store = client.app[STORE]

    async def start_dial(*_args: Any, **_kwargs: Any) -> None:
        raise DatabaseStalled("database did not answer in time (no connection free)")

    monkeypatch.setattr(store, "start_dial", start_dial)
    caplog.set_level(logging.INFO, logger="common.calls.service")
    for n in range(8):
        body = {"phone_number": f"+1415555770{n}", "name": "Ann"}
        resp = await client.post("/calls/outbound", json=body)
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"].startswith("calls database unavailable")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([line for line in lines if NOT_MARKED in line]) == 1, lines
