"""Call events: which events a change makes, and the dispatcher over a real outbox (SQLite)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from common.calls import events as events_module
from common.calls.events import RETRY_TRIES, EventDispatcher, events_for_change
from common.calls.models import CallEvent, CallRecord, NewCall
from common.calls.outcomes import Change, Status
from common.calls.service import log_status_change
from common.storage.sql import DEFAULT_LEASE_S as LEASE_S
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock, wait_for


def record(status: Status, answered: bool = False) -> CallRecord:
    return CallRecord(
        "call-x", "+1", "A", "en", "Calm", status, None, None, answered, False, 0, None, None, 0
    )


@pytest.mark.parametrize(
    ("before", "after", "types"),
    [
        (record(Status.DIALING), record(Status.RINGING), ("call.ringing",)),
        (record(Status.RINGING), record(Status.IN_PROGRESS, True), ("call.answered",)),
        (record(Status.DIALING), record(Status.IN_PROGRESS, True), ("call.answered",)),
        (record(Status.IN_PROGRESS, True), record(Status.COMPLETED, True), ("call.ended",)),
        (record(Status.RINGING), record(Status.BUSY), ("call.ended",)),
        (
            record(Status.RINGING),
            record(Status.COMPLETED, True),
            ("call.answered", "call.ended"),
        ),
        (record(Status.RINGING), record(Status.RINGING), ()),
    ],
)
def test_events_for_change(before: CallRecord, after: CallRecord, types: tuple[str, ...]) -> None:
    assert events_for_change(before, after) == types


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteCallStore]:
    opened = await SqliteCallStore.open(tmp_path / "calls.db", clock)
    yield opened
    await opened.close()


async def _placed_and_ended(store: SqliteCallStore, call_id: str) -> list[CallEvent]:
    created = await store.create_call(NewCall(call_id, "+1234567890", "A", "en", "Calm"))
    ended = await store.apply(call_id, "x", lambda _s: Change(Status.BUSY))
    return [*created.events, *ended.events]


async def test_subscribers_get_every_event_in_order_then_it_is_acked(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    seen: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}

    def subscriber(name: str):  # type: ignore[no-untyped-def]
        async def take(event: CallEvent) -> None:
            seen[name].append((event.call_id, event.type))

        return take

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("a", subscriber("a"))
    dispatcher.subscribe("b", subscriber("b"))
    dispatcher.start()
    try:
        for call_id in ("call-1", "call-2"):
            dispatcher.publish(await _placed_and_ended(store, call_id))
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    expected = [(c, t) for c in ("call-1", "call-2") for t in ("call.dialing", "call.ended")]
    assert seen == {"a": expected, "b": expected}
    # Acked: nothing is left for a later server to take over, even long after the lease.
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 100) == []


class MarkingLog:
    """The store's outbox, noting each mark (`marks`); the first `failing` marks fail."""

    def __init__(self, store: SqliteCallStore, marks: list[list[int]], failing: int = 0) -> None:
        self._store, self.marks, self._failing = store, marks, failing
        self.made = 0  # marks written

    async def ack_events(self, event_ids: list[int], now: float) -> None:
        self.marks.append(list(event_ids))
        if len(self.marks) <= self._failing:
            raise OSError("database restarting")
        await self._store.ack_events(event_ids, now)
        self.made += 1

    async def claim_stale_events(
        self,
        now: float,
        lease_s: float,
        limit: int,
        *,
        take_own: bool = False,
        held: Sequence[int] = (),
    ) -> list[CallEvent]:
        return await self._store.claim_stale_events(
            now, lease_s, limit, take_own=take_own, held=held
        )


async def take(_event: CallEvent) -> None:
    return None


async def test_events_dispatched_close_together_are_marked_in_one_write(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    writes: list[list[int]] = []

    dispatcher = EventDispatcher(MarkingLog(store, writes), clock, ack_delay_s=60.0)
    dispatcher.subscribe("take", take)
    dispatcher.start()
    published = []
    try:
        for call_id in ("call-1", "call-2", "call-3"):  # dispatched one call at a time
            events = await _placed_and_ended(store, call_id)
            published += [e.id for e in events]
            dispatcher.publish(events)
            await dispatcher.wait_idle()
        assert writes == []  # within the delay: not marked yet
    finally:
        await dispatcher.stop()  # marks what was dispatched
    assert writes == [published]
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 100) == []


async def soon(check: Callable[[], bool]) -> None:
    async def checked() -> bool:
        return check()

    await wait_for(checked, timeout=5, poll_s=0.005)


async def test_a_failing_subscriber_gets_the_event_again_soon(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    """A sub-second database restart failed the customer webhooks' writer: the event waited
    for its lease (60 s), and every later event of its call behind it."""
    attempts: list[str] = []
    logged: list[str] = []

    async def flaky(event: CallEvent) -> None:
        attempts.append(event.type)
        if len(attempts) <= 2:
            raise RuntimeError("database restarting")

    async def log(event: CallEvent) -> None:
        logged.append(event.type)

    dispatcher = EventDispatcher(store, clock, retry_s=0.01)
    dispatcher.subscribe("log", log)
    dispatcher.subscribe("flaky", flaky)
    dispatcher.start()
    try:
        created = await store.create_call(NewCall("call-1", "+1234567890", "A", "en", "Calm"))
        dispatcher.publish(created.events)
        await soon(lambda: len(attempts) == 3)
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    assert attempts == ["call.dialing"] * 3  # failed twice, then dispatched and acked
    assert logged == ["call.dialing"]  # the retries were the failing subscriber's alone
    # (review AN: every retry logged and counted an ended call again)
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 10) == []


async def test_an_event_that_keeps_failing_is_left_to_its_lease(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    attempts: list[str] = []

    async def broken(event: CallEvent) -> None:
        attempts.append(event.type)
        if len(attempts) <= RETRY_TRIES:
            raise RuntimeError("a defect")

    dispatcher = EventDispatcher(store, clock, retry_s=0.01)
    dispatcher.subscribe("broken", broken)
    dispatcher.start()
    try:
        created = await store.create_call(NewCall("call-1", "+1234567890", "A", "en", "Calm"))
        dispatcher.publish(created.events)
        await soon(lambda: len(attempts) == RETRY_TRIES)
        await asyncio.sleep(0.1)
        assert len(attempts) == RETRY_TRIES  # no more tries of its own
        assert await dispatcher.recover() == 0  # still within its lease
        clock.advance(LEASE_S + 1)
        assert await dispatcher.recover() == 1
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    assert len(attempts) == RETRY_TRIES + 1  # at least once: delivered again
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 10) == []


async def test_a_subscribers_defect_logs_its_traceback_once_a_minute_not_every_retry(
    store: SqliteCallStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber raising the unexpected logged a full traceback at every retry of every
    event (RETRY_TRIES an event, 2 s apart), with no limit: one a minute now, with how many
    were held back, as the reaper's, the webhook sender's and the campaign driver's."""

    async def broken(event: CallEvent) -> None:
        raise RuntimeError("a defect")

    dispatcher = EventDispatcher(store, clock, retry_s=0.01)
    dispatcher.subscribe("broken", broken)
    dispatcher.start()
    try:
        created = await store.create_call(NewCall("call-1", "+1234567890", "A", "en", "Calm"))
        dispatcher.publish(created.events)
        await soon(lambda: f"failed {RETRY_TRIES} times" in caplog.text)
    finally:
        await dispatcher.stop()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert tracebacks[0].getMessage() == "event 1 (call.dialing) failed in subscriber broken"


async def test_a_campaign_calls_status_line_names_its_campaign(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A campaign call's status line ("call call-… +1••••••0123 dialing -> in_progress") did
    not say which campaign it was of: an operator could not tell one list's calls from
    another's, or from single calls, in the log."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    data = {"phone_number": "+14155550123", "status": "in_progress", "created_at": None}
    single = CallEvent(1, "call-1", "call.answered", {**data, "campaign_id": None}, 0.0, "dialing")
    of_campaign = CallEvent(
        2, "call-2", "call.answered", {**data, "campaign_id": "cmp-ab12"}, 0.0, "dialing"
    )
    await log_status_change(single)
    await log_status_change(of_campaign)
    assert [r.getMessage() for r in caplog.records] == [
        "call call-1 +1••••••0123 dialing -> in_progress (0 s)",
        "call call-2 +1••••••0123 (campaign cmp-ab12) dialing -> in_progress (0 s)",
    ]


async def test_a_failed_mark_is_tried_again(
    store: SqliteCallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    marks: list[list[int]] = []

    log = MarkingLog(store, marks, failing=1)
    dispatcher = EventDispatcher(log, clock, ack_delay_s=0.0)
    dispatcher.subscribe("take", take)
    monkeypatch.setattr(events_module, "ACK_RETRY_S", 0.01)
    dispatcher.start()
    try:
        created = await store.create_call(NewCall("call-1", "+1234567890", "A", "en", "Calm"))
        dispatcher.publish(created.events)
        await soon(lambda: log.made == 1)  # (a mark the stop cuts short is made again)
    finally:
        await dispatcher.stop()
    assert marks == [[created.events[0].id]] * 2
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 10) == []


async def test_events_a_crashed_server_never_dispatched_are_taken_over(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "calls.db"
    crashed = await SqliteCallStore.open(path, clock)
    events = await _placed_and_ended(crashed, "call-1")  # committed, never published
    await crashed.close()

    clock.advance(LEASE_S + 1)
    restarted = await SqliteCallStore.open(path, clock)
    got: list[CallEvent] = []

    async def take(event: CallEvent) -> None:
        got.append(event)

    dispatcher = EventDispatcher(restarted, clock)
    dispatcher.subscribe("take", take)
    dispatcher.start()
    try:
        assert await dispatcher.recover() == 2
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
        await restarted.close()
    assert got == events


async def test_stop_dispatches_what_is_queued(store: SqliteCallStore, clock: FakeClock) -> None:
    slow: list[str] = []

    async def take(event: CallEvent) -> None:
        await asyncio.sleep(0.01)
        slow.append(event.type)

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("slow", take)
    dispatcher.start()
    dispatcher.publish(await _placed_and_ended(store, "call-1"))
    await dispatcher.stop()
    assert slow == ["call.dialing", "call.ended"]


async def test_events_given_up_in_an_outage_are_said_once_a_minute(
    store: SqliteCallStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A database down for RETRY_TRIES tries gave up on every event of a backlog with an
    ERROR line each (5 events: 5 lines, a campaign's backlog: thousands)."""
    from common.storage.base import DatabaseError

    tries: list[int] = []

    async def down(event: CallEvent) -> None:
        tries.append(event.id)
        raise DatabaseError("the database is starting up")

    dispatcher = EventDispatcher(store, clock, retry_s=0.01)
    dispatcher.subscribe("down", down)
    dispatcher.start()
    try:
        for n in range(5):
            new = NewCall(f"call-{n}", "+1234567890", "A", "en", "Calm")
            dispatcher.publish((await store.create_call(new)).events)
        await soon(lambda: len(tries) == 5 * RETRY_TRIES)
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    given_up = [r.getMessage() for r in caplog.records if "times; it is dispatched" in r.msg]
    assert len(given_up) == 1, given_up


async def test_a_dispatcher_whose_loop_ended_mid_batch_goes_on_with_the_rest(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    """A subscriber let out a cancellation that was not the stop's: the dispatcher's loop
    ended, unsaid, and no event was given to anyone again (the batch's rest neither) until
    their lease ran out, on another server."""
    seen: list[str] = []

    async def take(event: CallEvent) -> None:
        if not seen:
            seen.append("cut")
            raise asyncio.CancelledError  # let out of a task it awaited
        seen.append(event.call_id)

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("a", take)
    dispatcher.start()
    try:
        dispatcher.publish(await _placed_and_ended(store, "call-1"))

        async def given() -> bool:
            return len(seen) == 3

        await wait_for(given, timeout=10)  # once its loop started again, a second on
    finally:
        await dispatcher.stop()
    assert seen == ["cut", "call-1", "call-1"]  # the event cut short given again, then the rest


async def test_a_subscriber_that_does_not_end_is_said_with_where_it_waits(
    store: SqliteCallStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every event after it waits for it (every call's webhooks, campaigns), unsaid."""
    monkeypatch.setattr(events_module, "SLOW_SUBSCRIBER_S", 0.05)
    never = asyncio.Event()

    async def fine(event: CallEvent) -> None:
        pass

    async def hangs(event: CallEvent) -> None:
        await never.wait()

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("fine", fine)
    dispatcher.subscribe("hangs", hangs)
    dispatcher.start()
    try:
        dispatcher.publish(await _placed_and_ended(store, "call-1"))
        await asyncio.sleep(0.3)
        never.set()
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1, said
    assert said[0].startswith(
        "event dispatcher: event 1 (call.dialing), now at subscriber hangs, has run for 0 s"
    ), said
    assert " > hangs (test_events.py:" in said[0], said


async def test_a_mark_the_loop_ended_in_is_made_again(
    store: SqliteCallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop ended while it marked events dispatched (the stop's cancellation as the mark's
    write waited, or a stray one, after which kept_running starts it again): the events it was
    marking were dropped from its list, never marked, and once their lease ran out given to
    every subscriber again (a take-over, counted towards their giving up)."""
    ack = store.ack_events
    writing = asyncio.Event()

    async def waits_once(event_ids: list[int], now: float) -> None:
        if not writing.is_set():
            writing.set()
            await asyncio.Event().wait()  # a write still waiting as the loop ends
        await ack(event_ids, now)

    monkeypatch.setattr(store, "ack_events", waits_once)

    async def take(event: CallEvent) -> None:
        pass

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("a", take)
    dispatcher.start()
    try:
        dispatcher.publish(await _placed_and_ended(store, "call-1"))
        await asyncio.wait_for(writing.wait(), 10)
    finally:
        await dispatcher.stop()  # idle: the mark in flight is cut short
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 10) == []


async def test_events_queued_behind_a_slow_subscriber_are_not_taken_over_by_their_own_server(
    store: SqliteCallStore, clock: FakeClock
) -> None:
    """Their claims ran out while they waited in this server's queue: each lease its own
    take-over claimed them again, queued them again (given as many times) and counted it, and
    after MAX_TAKEOVERS leases gave them up (an ERROR blaming a failing subscriber): a server
    restarted then (a hung one is) left them never dispatched. Their claims are renewed."""
    hang = asyncio.Event()
    given: list[int] = []

    async def slow(event: CallEvent) -> None:
        given.append(event.id)
        await hang.wait()

    dispatcher = EventDispatcher(store, clock)
    dispatcher.subscribe("slow", slow)
    dispatcher.start()
    try:
        first = await store.create_call(NewCall("call-1", "+1234567890", "A", "en", "Calm"))
        second = await store.create_call(NewCall("call-2", "+1234567890", "A", "en", "Calm"))
        dispatcher.publish([*first.events, *second.events])  # the first hangs, the second waits
        for _ in range(events_module.MAX_TAKEOVERS + 1):
            clock.advance(LEASE_S + 1)
            assert await dispatcher.recover() == 0
        hang.set()
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    assert given == [first.events[0].id, second.events[0].id]
    assert await store.claim_stale_events(clock.now + 10 * LEASE_S, LEASE_S, 10) == []
