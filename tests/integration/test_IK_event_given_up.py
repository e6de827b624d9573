"""An outbox event that a subscriber always fails (a defect its data meets every time) was
given to every subscriber again each time its claim ran out, for good: each take-over
dispatched it whole (logs, metrics, campaigns) and its failing subscriber's retries again,
once a lease, as long as the server ran."""

from __future__ import annotations

import logging
import sqlite3

import pytest

from common.calls.events import MAX_TAKEOVERS
from common.calls.models import CallEvent, NewCall
from handlers.keys import CALLS, EVENTS
from tests.conftest import AppFactory


async def test_an_event_a_subscriber_always_fails_is_given_up_after_its_take_overs(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(metrics_reuse_s=0.0)
    calls, events = client.app[CALLS], client.app[EVENTS]
    assert "call_events_given_up 0.0" in await (await client.get("/metrics")).text()
    bad = await calls.store.create_call(NewCall("call-bad", "+14155550100", "A", "en", "Calm"))
    good = await calls.store.create_call(NewCall("call-good", "+14155550101", "A", "en", "Calm"))
    # Written by the store alone (not published to this server's dispatcher): undispatched.
    bad_id, good_id = bad.events[0].id, good.events[0].id
    given: list[int] = []  # to every subscriber: a take-over's dispatch, not a retry's

    async def witness(event: CallEvent) -> None:
        given.append(event.id)

    async def always_fails(event: CallEvent) -> None:
        if event.id == bad_id:
            raise RuntimeError("a defect this event's data meets")

    events.subscribe("witness", witness)
    events.subscribe("always fails", always_fails)
    path = calls.settings.calls_db_path
    for _ in range(MAX_TAKEOVERS + 3):
        with sqlite3.connect(path) as db:  # its claim ran out (another server's, or ours)
            db.execute("UPDATE outbox SET claimed_until = 1 WHERE id = ?", (bad_id,))
        await events.recover()
        await events.wait_idle()
    assert given.count(bad_id) == MAX_TAKEOVERS, given
    with sqlite3.connect(path) as db:
        db.execute("UPDATE outbox SET claimed_until = 1 WHERE id = ?", (good_id,))
    await events.recover()  # the others are taken over as before
    await events.wait_idle()
    assert given.count(good_id) == 1
    with sqlite3.connect(path) as db:
        row = db.execute(
            "SELECT dispatched_at, given_up_at, takeovers FROM outbox WHERE id = ?", (bad_id,)
        ).fetchone()
    assert row[0] is None and row[1] is not None and row[2] == MAX_TAKEOVERS + 1, row  # kept
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and "given up" in r.getMessage()
    ]
    assert len(said) == 1, said
    assert f"event {bad_id} (call.dialing, call-bad)" in said[0], said
    # and counted, for an alert: the line is said once
    assert "call_events_given_up 1.0" in await (await client.get("/metrics")).text()
