"""A customer delivery whose event no longer reads (its outbox data cut short by a hand edit,
or written by another release) raised out of the sender's claim, whose transaction rolled
back: every pass, no customer webhook was sent, to any receiver."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from common.calls.models import NewCall
from common.calls.outcomes import Change, Status
from handlers.keys import CALLS, WEBHOOKS
from tests.conftest import AppFactory
from tests.integration.test_customer_webhooks import receivers as receivers  # noqa: F401
from tests.integration.test_customer_webhooks import wait_until, webhook_app


async def test_a_delivery_whose_event_no_longer_reads_leaves_the_others_to_be_sent(
    start_app: AppFactory, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url)
    calls = client.app[CALLS]
    # Written by the store alone: the sender, idle, is not woken until the edit is made.
    created = [
        await calls.store.create_call(
            NewCall(call_id, "+14155550100", "A", "en", "Calm", webhook_url=receiver.url)
        )
        for call_id in ("call-bad", "call-good")
    ]
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        db.execute("UPDATE outbox SET data = '{\"status\": ' WHERE call_id = 'call-bad'")
    client.app[WEBHOOKS].wake()
    await wait_until(lambda: receiver.types("call-good") == ["call.dialing"])
    assert receiver.types("call-bad") == []
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        row = db.execute(
            "SELECT state, claimed_until FROM deliveries WHERE call_id = 'call-bad'"
        ).fetchone()
    assert row[0] == "pending" and row[1] > 0, row  # kept, and taken up again later
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, said
    bad_event = created[0].events[0].id
    assert f"(event {bad_event}, call.dialing of call-bad) no longer reads" in said[0], said


async def test_a_sent_delivery_is_recorded_when_its_calls_next_one_no_longer_reads(
    start_app: AppFactory, receivers: Any
) -> None:
    """Its record claims its call's next delivery in the same transaction: that one not
    reading rolled the record back, and the delivery made was sent again, every lease."""
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url)
    store = client.app[CALLS].store
    new = NewCall("call-x", "+14155550100", "A", "en", "Calm", webhook_url=receiver.url)
    await store.create_call(new)
    ringing = await store.apply("call-x", "test", lambda _state: Change(Status.RINGING))
    with sqlite3.connect(client.app[CALLS].settings.calls_db_path) as db:
        db.execute("UPDATE outbox SET data = '{\"status\": ' WHERE id = ?", (ringing.events[0].id,))
    client.app[WEBHOOKS].wake()

    def states() -> list[str]:
        with sqlite3.connect(client.app[CALLS].settings.calls_db_path) as db:
            rows = db.execute("SELECT state FROM deliveries ORDER BY id").fetchall()
        return [state for (state,) in rows]

    await wait_until(lambda: states() == ["delivered", "pending"])
    assert receiver.types("call-x") == ["call.dialing"]


async def test_a_delivery_whose_url_no_longer_parses_leaves_the_others_to_be_sent(
    start_app: AppFactory, receivers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Its receiver (scheme, host, port) raised out of the start of the claimed batch: the
    deliveries after it in the batch were never started, claimed again with it once their
    claims ran out, and never sent."""
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url)
    calls = client.app[CALLS]
    for call_id in ("call-bad", "call-good"):
        new = NewCall(call_id, "+14155550100", "A", "en", "Calm", webhook_url=receiver.url)
        await calls.store.create_call(new)
    bad_url = "http://user:secret@127.0.0.1:99999/hooks?token=t"  # a port out of range
    with sqlite3.connect(calls.settings.calls_db_path) as db:
        db.execute("UPDATE deliveries SET url = ? WHERE call_id = 'call-bad'", (bad_url,))
    client.app[WEBHOOKS].wake()
    await wait_until(lambda: receiver.types("call-good") == ["call.dialing"])

    def bad_delivery() -> tuple[str, int, str]:
        with sqlite3.connect(calls.settings.calls_db_path) as db:
            query = "SELECT state, attempts, last_error FROM deliveries WHERE call_id = 'call-bad'"
            row: tuple[str, int, str] = db.execute(query).fetchone()
        return row

    await wait_until(lambda: bad_delivery()[1] == 1)  # an attempt, on the retry ladder
    state, _, error = bad_delivery()
    assert state == "pending" and "URL" in error, (state, error)
    said = [r.getMessage() for r in caplog.records if r.name == "common.notify.deliveries"]
    assert len(said) == 1 and "to http://127.0.0.1:99999: no request made" in said[0], said


async def test_sends_whose_records_fail_in_an_outage_are_said_once_a_minute(
    start_app: AppFactory,
    receivers: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A database outage failed the record of every send in flight (up to MAX_CONCURRENCY):
    an ERROR line each (3 sends: 3 lines)."""
    from common.notify import deliveries
    from common.storage.base import DatabaseError

    monkeypatch.setattr(deliveries, "RECORD_RETRY_S", (0.01,))
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url)
    store = client.app[CALLS].store
    tried: list[int] = []

    async def down(delivery_id: int, *_args: Any) -> Any:
        tried.append(delivery_id)
        raise DatabaseError("the database is starting up")

    monkeypatch.setattr(store, "record_delivery", down)
    for n in range(3):
        new = NewCall(f"call-{n}", "+14155550100", "A", "en", "Calm", webhook_url=receiver.url)
        await store.create_call(new)
    client.app[WEBHOOKS].wake()
    # Each tried twice, then left to its lease (said as its second try fails, at once)
    await wait_until(lambda: len(tried) == 3 * 2)
    said = [r.getMessage() for r in caplog.records if "could not record" in r.getMessage()]
    assert len(said) == 1, said


async def test_a_send_whose_record_raises_the_unexpected_is_said(
    start_app: AppFactory,
    receivers: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A defect in a send's task (its record raising what it did not expect) was read by
    nobody: said only as asyncio's "Task exception was never retrieved" when the task was
    collected, if ever."""
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url)
    store = client.app[CALLS].store
    tried: list[int] = []

    async def broken(delivery_id: int, *_args: Any) -> Any:
        tried.append(delivery_id)
        raise RuntimeError("a defect (test)")

    monkeypatch.setattr(store, "record_delivery", broken)
    for n in range(2):
        new = NewCall(f"call-{n}", "+14155550100", "A", "en", "Calm", webhook_url=receiver.url)
        await store.create_call(new)
    client.app[WEBHOOKS].wake()
    await wait_until(lambda: len(tried) == 2 and not client.app[WEBHOOKS]._sending)
    said = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].getMessage().startswith("a customer webhook send failed"), said[0]
    assert said[0].exc_info is not None and "a defect (test)" in str(said[0].exc_info[1])
