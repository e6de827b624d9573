"""A SIGTERM while SQLite's disk stalls (a write that never returns): each step of the stop
that needs the database (the campaigns handed over, the sandbox's calls settled, the events
acknowledged, the database closed) waited its own QUEUE_WAIT_S (10 s) behind that write, one
after the other: 40 s, past Kubernetes' 30 s grace. They now share server.STOP_DATABASE_WAIT_S,
as on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from common.storage import sqlite as sqlite_store
from handlers.keys import STORE
from tests.conftest import AppFactory
from tests.reliability.test_sqlite_faults import StallingConnection, _place, _quiet_app


async def test_a_stop_while_the_disk_stalls_waits_on_it_once_in_all(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "QUEUE_WAIT_S", 4.0)  # the stop's budget is 5 s
    client = await _quiet_app(start_app)
    db = client.app[STORE]
    stalling = StallingConnection(db.conn)
    db._conn = stalling
    try:
        stalled = asyncio.ensure_future(_place(client, name="Stalled"))
        assert await asyncio.to_thread(stalling.stalled.wait, 10)
        assert (await stalled).status == 503
        started = time.monotonic()
        await asyncio.wait_for(client.close(), 60)  # the app's stop, as SIGTERM runs it
        took = time.monotonic() - started
        assert took < 7.0, f"the stop took {took:.1f} s"
        said = [r.getMessage() for r in caplog.records if "as the server stops" in r.getMessage()]
        assert len(said) == 1 and "waited 5 s" in said[0], said
    finally:
        stalling.go.set()
