"""An outbox row whose data no longer reads (cut short by a hand edit, or written by another
release) raised out of the take-over of a dead server's events: its transaction rolled back,
and every pass, no event was taken over (a call.ended among them: its campaign attempt never
ended, its customer webhook never sent)."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from common.calls.models import NewCall
from handlers.keys import CALLS, EVENTS
from tests.conftest import AppFactory
from tests.helpers import wait_for


async def test_an_event_that_no_longer_reads_leaves_the_others_to_be_taken_over(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    calls = client.app[CALLS]
    bad = await calls.store.create_call(NewCall("call-bad", "+14155550100", "A", "en", "Calm"))
    good = await calls.store.create_call(NewCall("call-good", "+14155550101", "A", "en", "Calm"))
    # Written by the store alone (not published to this server's dispatcher): undispatched.
    bad_id, good_id = bad.events[0].id, good.events[0].id
    taken: list[int] = []

    async def take(event: Any) -> None:
        taken.append(event.id)

    client.app[EVENTS].subscribe("probe", take)

    def dead_server_left_them(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE outbox SET dispatched_at = NULL, claimed_until = 1,"
            " claimed_by = 'dead:8000@gone' WHERE id IN (?, ?)",
            (bad_id, good_id),
        )

    with sqlite3.connect(calls.settings.calls_db_path) as db:
        dead_server_left_them(db)
        db.execute("UPDATE outbox SET data = '{\"status\": ' WHERE id = ?", (bad_id,))
    await client.app[EVENTS].recover()

    async def taken_over() -> bool:
        return good_id in taken

    await wait_for(taken_over, timeout=10)
    assert bad_id not in taken
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        row = db.execute("SELECT dispatched_at, claimed_until FROM outbox WHERE id = ?", (bad_id,))
        dispatched_at, claimed_until = row.fetchone()
        assert dispatched_at is None and claimed_until > 1  # kept, to be read again
        dead_server_left_them(db)  # its claim ran out: taken up again, not said again
    await client.app[EVENTS].recover()
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    assert said[0].startswith(f"event {bad_id} (call.dialing) of call call-bad no longer reads")
