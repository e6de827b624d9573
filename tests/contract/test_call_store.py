"""The CallStore contract: calls, timelines, idempotency, admission and the outbox, the same on
every backend (tests/contract/conftest.py picks them)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from typing import cast

import asyncpg
import pytest

from common.calls.models import (
    Applied,
    Decide,
    DeliveryOutcome,
    IdempotencyClaim,
    LostCall,
    NewCall,
    RecordedDelivery,
    StoredAnswer,
    TimelineEntry,
)
from common.calls.outcomes import CallState, Change, Signal, Status, next_state
from common.notify.deliveries import next_outcome
from common.storage import programs
from common.storage.base import (
    AdmissionLimits,
    CallStore,
    DatabaseError,
    KeyTaken,
    Placer,
    Refusal,
    Refused,
)
from common.storage.paging import Before
from common.storage.postgres import PostgresCallStore, numbered
from common.storage.sql import SqlCallStore
from common.storage.sqlite import SqliteCallStore
from common.times import iso_time
from tests.contract.conftest import Backend
from tests.helpers import FakeClock, every_page

CALL = "call-000000000001"


def new_call(call_id: str = CALL, phone: str = "+1234567890", client: str = "") -> NewCall:
    return NewCall(call_id, phone, "Alice Smith", "en", "Excited", client=client)


def set_status(status: Status, reason: str | None = None, answered: bool = False) -> Decide:
    def decide(_state: CallState) -> Change:
        return Change(status, reason, answered)

    return decide


def decide_by(signal: Signal) -> Decide:
    """What the webhook path does: the pure mapping, for one signal."""
    return lambda state: next_state(state, signal)


def nothing(_state: CallState) -> None:
    return None


# ------------------------------------------------------------------ lifecycle


async def test_reopen_reads_back_everything(backend: Backend, clock: FakeClock) -> None:
    first = await backend.open()
    claim = IdempotencyClaim("alice", "key-1", "h1")
    created = await first.create_call(new_call(), {"source": "api"}, claim=claim)
    assert created.after is not None and created.after.call_id == CALL
    clock.advance(3)
    await first.apply(CALL, "participant_joined", set_status(Status.RINGING), event_id="EV_1")
    await first.request_hangup(CALL)
    await first.answer_idempotent("alice", "key-1", CALL, 200, {"status": "success"})
    before = await first.get_call(CALL)
    await first.close()

    second = await backend.open()
    try:
        after = await second.get_call(CALL)
        assert after == before
        assert after is not None
        assert after.status is Status.RINGING and after.hangup_requested
        assert [e.kind for e in after.timeline] == [
            "created",
            "participant_joined",
            "hangup_requested",
        ]
        assert after.timeline[0].detail == {"source": "api"}
        assert await second.get_idempotent("alice", "key-1") == StoredAnswer(
            CALL, "h1", 200, {"status": "success"}
        )
        # The event id is still known: a retried webhook stays a duplicate after a restart.
        applied = await second.apply(
            CALL, "participant_joined", set_status(Status.FAILED), event_id="EV_1"
        )
        assert applied.duplicate
    finally:
        await second.close()


async def test_closed_store_raises_database_error(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    with pytest.raises(DatabaseError):
        await store.get_call(CALL)
    with pytest.raises(DatabaseError):
        await store.create_call(new_call())


# ------------------------------------------------------------------ calls


async def test_create_and_get(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call(), {"dispatch": "pending"})
    call = await store.get_call(CALL)
    assert call is not None
    assert (call.call_id, call.phone_number, call.caller_name) == (
        CALL,
        "+1234567890",
        "Alice Smith",
    )
    assert (call.language, call.emotion) == ("en", "Excited")
    assert call.status is Status.DIALING
    assert (call.outcome, call.reason) == (None, None)
    assert not call.answered and not call.hangup_requested
    assert call.created_at == call.updated_at == clock.now
    assert call.answered_at is None and call.ended_at is None
    assert not call.is_final
    assert call.state == CallState(Status.DIALING, dialled=False)  # not dialled yet
    assert call.timeline == (
        TimelineEntry("created", None, "dialing", {"dispatch": "pending"}, clock.now, None),
    )
    assert (call.ringing_timeout_s, call.max_duration_s, call.config) == (30, 600, {})
    assert await store.get_call(CALL, with_timeline=False) == dataclasses.replace(call, timeline=())


async def test_get_unknown_call(store: CallStore) -> None:
    assert await store.get_call("call-nope") is None


async def test_duplicate_call_id_is_a_database_error(store: CallStore) -> None:
    await store.create_call(new_call())
    with pytest.raises(DatabaseError):
        await store.create_call(new_call())
    call = await store.get_call(CALL)
    assert call is not None and len(call.timeline) == 1  # no stray "created" entry


async def test_list_calls_newest_first_with_filters(store: CallStore, clock: FakeClock) -> None:
    ids = [f"call-00000000000{n}" for n in range(5)]
    created: dict[str, float] = {}
    for call_id in ids:
        clock.advance(10)
        await store.create_call(new_call(call_id))
        created[call_id] = clock.now
    await store.apply(ids[1], "room_finished", set_status(Status.NO_ANSWER, "no answer"))
    await store.apply(ids[3], "room_finished", set_status(Status.BUSY))

    everything = await store.list_calls()
    assert [c.call_id for c in everything] == ids[::-1]
    assert all(c.timeline == () for c in everything)  # lists carry no timelines

    assert [c.call_id for c in await store.list_calls(limit=2)] == [ids[4], ids[3]]
    dialing = await store.list_calls(status=Status.DIALING)
    assert [c.call_id for c in dialing] == [ids[4], ids[2], ids[0]]
    assert [c.call_id for c in await store.list_calls(status=Status.BUSY)] == [ids[3]]
    assert await store.list_calls(status=Status.COMPLETED) == []
    # `before` pages on created_at, strictly.
    assert [c.call_id for c in await store.list_calls(before=Before(created[ids[2]]))] == [
        ids[1],
        ids[0],
    ]
    page = await store.list_calls(status=Status.DIALING, before=Before(created[ids[4]]), limit=1)
    assert [c.call_id for c in page] == [ids[2]]


async def test_paging_calls_created_in_one_instant_skips_none(
    store: CallStore, clock: FakeClock
) -> None:
    """Pages ended at their last call's created_at, and the next one began strictly before
    it: calls created in the same instant as that one (two servers, a coarse clock) were
    never listed."""
    ids = [f"call-0000000000{n:02d}" for n in range(7)]
    for n, call_id in enumerate(ids):
        if n in (1, 4):  # three calls at one instant, then another three at another
            clock.advance(1)
        await store.create_call(new_call(call_id))
    seen = await every_page(
        lambda before: store.list_calls(limit=2, before=before),
        lambda call: Before.after(call.created_at, call.call_id),
        limit=2,
    )
    assert [c.call_id for c in seen] == ids[::-1]  # every call once, newest first, ties by id


async def test_count_live_and_by_status(store: CallStore) -> None:
    assert await store.count_live() == 0
    for n in range(4):
        await store.create_call(new_call(f"call-00000000000{n}"))
    await store.apply("call-000000000001", "x", set_status(Status.RINGING))
    await store.apply("call-000000000002", "x", set_status(Status.IN_PROGRESS, answered=True))
    await store.apply("call-000000000003", "x", set_status(Status.FAILED, "trunk"))
    assert await store.count_live() == 3
    assert await store.count_by_status() == {
        "dialing": 1,
        "ringing": 1,
        "in_progress": 1,
        "failed": 1,
    }


async def test_request_hangup(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call())
    clock.advance(5)
    call = await store.request_hangup(CALL)
    assert call is not None
    assert call.hangup_requested
    assert call.state == CallState(Status.DIALING, hangup_requested=True, dialled=False)
    assert call.updated_at == clock.now
    assert call.status is Status.DIALING  # asking is not ending
    assert await store.request_hangup("call-unknown") is None


async def test_a_call_already_over_is_not_marked_for_a_hangup(store: CallStore) -> None:
    """A hang-up that lost the race to the call's end (a placement refused, settled failed
    between the service's look and the mark) left the mark on a call that was over, answered
    409; a later event of that call (a final report) read it as hung up through the API and
    released its held customer deliveries (probe BE)."""
    await store.create_call(new_call())
    await store.apply(CALL, "placement_failed", lambda _s: Change(Status.FAILED, "refused"))
    over = await store.request_hangup(CALL)
    assert over is not None and over.is_final and not over.hangup_requested
    call = await store.get_call(CALL)
    assert call is not None and not call.hangup_requested
    assert [e.kind for e in call.timeline] == ["created", "placement_failed"]


async def test_a_hangup_asked_twice_is_one_mark_and_one_line(
    store: CallStore, clock: FakeClock
) -> None:
    await store.create_call(new_call())
    first = await store.request_hangup(CALL)
    clock.advance(1)
    # Our own hang-up makes the callee's leg leave: a second request still finds the call.
    await store.apply(CALL, "participant_left", nothing, event_id="EV_L", callee_left=True)
    again = await store.request_hangup(CALL)
    assert first is not None and again is not None and again.hangup_requested
    call = await store.get_call(CALL)
    assert call is not None
    assert [e.kind for e in call.timeline] == ["created", "hangup_requested", "participant_left"]


async def test_once_the_callee_left_a_hangup_is_not_marked(
    store: CallStore, clock: FakeClock
) -> None:
    await store.create_call(new_call())
    clock.advance(3)
    await store.apply(CALL, "participant_left", nothing, event_id="EV_L", callee_left=True)
    left_at = clock.now
    clock.advance(1)
    await store.apply(CALL, "participant_left", nothing, event_id="EV_L2", callee_left=True)
    unmarked = await store.request_hangup(CALL)  # the call is the callee's to end
    assert unmarked is not None and not unmarked.hangup_requested
    call = await store.get_call(CALL)
    assert call is not None and not call.hangup_requested
    assert call.callee_left_at == left_at  # the first time it was said


async def test_once_the_room_finished_a_hangup_is_not_marked(store: CallStore) -> None:
    """An unanswered call waits out the settle grace after room_finished for a late answer:
    a hang-up then settled it canceled at once, and the answer no longer counted."""
    await store.create_call(new_call())
    await store.apply(CALL, "room_finished", nothing, event_id="EV_F", room_finished=True)
    unmarked = await store.request_hangup(CALL)
    assert unmarked is not None and not unmarked.hangup_requested
    call = await store.get_call(CALL)
    assert call is not None and not call.hangup_requested


async def test_an_unanswered_only_hangup_leaves_an_answered_call_unmarked(
    store: CallStore,
) -> None:
    """POST /dnc's hang-up of a call it read ringing: answered since, it is not marked (the
    callee is on the line); still ringing, it is."""
    await store.create_call(new_call("call-a"))
    await store.create_call(new_call("call-b"))
    for call_id in ("call-a", "call-b"):
        await store.start_dial(call_id)
        await store.apply(call_id, "ringing", lambda _s: Change(Status.RINGING))
    await store.apply("call-a", "answered", lambda _s: Change(Status.IN_PROGRESS, answered=True))
    answered = await store.request_hangup("call-a", unanswered=True)
    assert answered is not None and not answered.hangup_requested
    call = await store.get_call("call-a")
    assert call is not None and not call.hangup_requested
    assert "hangup_requested" not in [e.kind for e in call.timeline]
    ringing = await store.request_hangup("call-b", unanswered=True)
    assert ringing is not None and ringing.hangup_requested
    # For the do-not-call list, as its reason says (it read "hung up through the API").
    assert ringing.hangup_for_dnc and ringing.state.hangup_reason.startswith("hung up: its number")
    stored = await store.get_call("call-b")
    assert stored is not None and stored.hangup_for_dnc
    assert [e.detail for e in stored.timeline if e.kind == "hangup_requested"] == [
        {"by": "do_not_call"}
    ]


async def test_start_dial_marks_the_call_and_returns_it(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call("call-a"))
    await store.create_call(new_call("call-b"))
    await store.request_hangup("call-b")
    marked = await store.start_dial("call-b")
    assert marked is not None and marked.hangup_requested  # what placement checks
    assert marked.state.dialled and marked.sandbox_instance is None
    unmarked = await store.get_call("call-a")
    assert unmarked is not None and not unmarked.state.dialled
    assert await store.start_dial("call-unknown") is None
    clock.advance(61)
    assert await store.never_dialled(clock.now - 60) == ["call-a"]


async def test_never_dialled_finds_an_earlier_runs_placements_at_once(
    store: CallStore, clock: FakeClock
) -> None:
    """A server killed between recording a call and dialling it, restarted at once: its
    earlier run's undialled calls are found without waiting out the bound; another server's,
    and its own run's, are left to it until then; a dialled one never."""
    here, there = "host:8000:127.0.0.1", "other:8000:127.0.0.1"
    placed = {
        "call-old": (here, "run-1"),
        "call-dialled": (here, "run-1"),
        "call-now": (here, "run-2"),
        "call-theirs": (there, "run-9"),
        "call-unnamed": None,  # placed by a release from before the column
    }
    for call_id, placer in placed.items():
        await store.create_call(dataclasses.replace(new_call(call_id), placed_by=placer))
    await store.start_dial("call-dialled")
    clock.advance(1)
    run_2 = Placer(here, "run-2", clock.now)
    assert await store.never_dialled(clock.now - 60, placer=run_2) == ["call-old"]
    assert await store.never_dialled(clock.now - 60) == []
    clock.advance(60)
    found = await store.never_dialled(clock.now - 60, placer=run_2)
    assert sorted(found) == ["call-now", "call-old", "call-theirs", "call-unnamed"]


async def test_never_dialled_leaves_a_same_named_servers_placements_to_it(
    store: CallStore, clock: FakeClock
) -> None:
    """Two servers by one name (containers scaled with one `hostname`, same PORT and HOST):
    each pass of each settled the other's calls being placed "failed", never dialled, as
    its own earlier run's. Only what another run recorded before this run began is."""
    here = "calls:8000@0.0.0.0"
    await store.create_call(dataclasses.replace(new_call("call-gone"), placed_by=(here, "r1")))
    clock.advance(5)
    this_run = Placer(here, "r2", clock.now)
    clock.advance(5)
    await store.create_call(dataclasses.replace(new_call("call-twin"), placed_by=(here, "r3")))
    await store.create_call(dataclasses.replace(new_call("call-mine"), placed_by=(here, "r2")))
    clock.advance(1)
    assert await store.never_dialled(clock.now - 60, placer=this_run) == ["call-gone"]


async def test_a_database_from_before_the_placer_upgrades_in_place(
    backend: Backend, clock: FakeClock
) -> None:
    """A database of the release before placed_by (SQLite schema 21, PostgreSQL 15), with a
    call left undialled: the upgrade keeps it, unnamed (found past the bound only), and the
    calls placed after it name their placer."""
    store = await backend.open()
    await store.create_call(new_call("call-old"))
    undo = "ALTER TABLE calls DROP COLUMN placed_by; ALTER TABLE calls DROP COLUMN placed_run;"
    if isinstance(store, PostgresCallStore):
        conn = await asyncpg.connect(store.dsn)
        try:
            await conn.execute(undo)
            await conn.execute("DELETE FROM schema_migrations WHERE version >= 16")
        finally:
            await conn.close()
    else:
        assert isinstance(store, SqliteCallStore)
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.executescript(
                f"{undo} DROP INDEX deliveries_due_heads; DROP INDEX deliveries_claimed;"  # 0024
                f" ALTER TABLE deliveries DROP COLUMN behind;"
                " ALTER TABLE outbox DROP COLUMN takeovers;"  # 0025
                " ALTER TABLE outbox DROP COLUMN given_up_at; PRAGMA user_version = 21;"
            )
    await store.close()
    store = await backend.open()
    try:
        placer = ("host:8000:127.0.0.1", "run-1")
        await store.create_call(dataclasses.replace(new_call("call-new"), placed_by=placer))
        clock.advance(1)  # then the server restarts
        assert await store.never_dialled(
            clock.now - 60, placer=Placer("host:8000:127.0.0.1", "run-2", clock.now)
        ) == ["call-new"]
        clock.advance(60)
        assert sorted(await store.never_dialled(clock.now - 60)) == ["call-new", "call-old"]
    finally:
        await store.close()


# ------------------------------------------------------------------ the reaper


def stale_ids(calls: list[LostCall]) -> list[str]:
    return [call.call_id for call in calls]


async def test_stale_live_calls(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call("call-old-live"))
    await store.create_call(new_call("call-old-final"))
    await store.apply("call-old-final", "room_finished", set_status(Status.COMPLETED))
    clock.advance(700)
    await store.create_call(new_call("call-new-live"))
    # A call is stale past its own ringing timeout + max duration (30 + 600 here) + margin.
    assert stale_ids(await store.stale_live_calls(clock.now, 50)) == ["call-old-live"]
    assert sorted(stale_ids(await store.stale_live_calls(clock.now + 631, 0))) == [
        "call-new-live",
        "call-old-live",
    ]
    assert stale_ids(await store.stale_live_calls(clock.now, 1000)) == []
    # The sandbox playing calls 2x slower: twice the limits (a call takes twice as long).
    assert stale_ids(await store.stale_live_calls(clock.now, 50, stretch=2.0)) == []
    assert stale_ids(await store.stale_live_calls(clock.now + 631, 0, stretch=2.0)) == [
        "call-old-live"
    ]


async def test_a_step_of_the_clock_makes_no_call_placed_before_it_stale(
    store: CallStore, clock: FakeClock
) -> None:
    """The clock stepped forward an hour after call-before was placed: it is 100 s old, not
    3700 s; a call placed after the step is judged by the clock as it is."""
    await store.create_call(new_call("call-before"))
    clock.advance(3600)  # the step
    steps = [(clock.now, 3600.0)]
    await store.create_call(new_call("call-after"))
    clock.advance(100)
    assert stale_ids(await store.stale_live_calls(clock.now, 50, steps=steps)) == []
    assert stale_ids(await store.stale_live_calls(clock.now, 50)) == ["call-before"]
    clock.advance(600)  # 700 s after each was placed: both past 30 + 600 + 50
    assert sorted(stale_ids(await store.stale_live_calls(clock.now, 50, steps=steps))) == [
        "call-after",
        "call-before",
    ]


async def test_a_call_placed_between_two_steps_is_younger_by_the_later_one_alone(
    store: CallStore, clock: FakeClock
) -> None:
    """The clock stepped forward a day (a VM suspended overnight), then call-between was
    placed, then it stepped an hour: call-between is younger by the hour only. Counting
    every step since the server started kept such a call live a day past any possible end,
    taking a line of the live cap and of its campaign."""
    await store.create_call(new_call("call-first"))
    clock.advance(86400)  # the night's suspend
    night_at = clock.now
    await store.create_call(new_call("call-between"))
    clock.advance(3600)  # another step
    steps = [(night_at, 86400.0 + 3600.0), (clock.now, 3600.0)]
    clock.advance(700)  # 700 s run since each was placed: past 30 + 600 + 50
    assert sorted(stale_ids(await store.stale_live_calls(clock.now, 50, steps=steps))) == [
        "call-between",
        "call-first",
    ]
    assert stale_ids(await store.stale_live_calls(clock.now - 100, 50, steps=steps)) == []


async def test_a_call_whose_room_finished_long_ago_is_stale_if_still_live(
    store: CallStore, clock: FakeClock
) -> None:
    """A room that finished lately waits out the grace (settled by what is known); one whose
    room finished long ago and that no rule settled (the grace rule leaves a call never
    dialled as it is, and never_dialled asks for `dialing` only) stayed live for ever."""
    await store.create_call(new_call())
    await store.apply(CALL, "participant_joined", set_status(Status.RINGING))
    await store.apply(CALL, "room_finished", nothing, event_id="EV_F", room_finished=True)
    finished = clock.now
    clock.advance(2 * 86400)
    assert stale_ids(await store.stale_live_calls(clock.now, 30, finished_before=finished)) == []
    assert stale_ids(await store.stale_live_calls(clock.now, 30, finished_before=finished + 1)) == [
        CALL
    ]


async def test_stale_uses_each_calls_own_limits(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(dataclasses.replace(new_call("call-short"), max_duration_s=30))
    await store.create_call(dataclasses.replace(new_call("call-long"), max_duration_s=3600))
    clock.advance(200)
    assert stale_ids(await store.stale_live_calls(clock.now, 60)) == ["call-short"]


async def test_graceless_finished(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call("call-a"))
    await store.create_call(new_call("call-b"))
    await store.apply("call-a", "room_finished", nothing, room_finished=True)
    await store.apply("call-b", "room_finished", set_status(Status.BUSY), room_finished=True)
    applied = await store.apply("call-a", "x", nothing, room_finished=True)
    assert applied.after is not None and applied.after.room_finished_at == clock.now
    assert applied.after.state.room_finished
    clock.advance(10)
    assert await store.graceless_finished(clock.now - 20) == []
    assert await store.graceless_finished(clock.now - 5) == ["call-a"]  # b is final
    # on time: the longer bound for a room_finished that came late is not its own
    assert await store.graceless_finished(clock.now - 5, clock.now - 40) == ["call-a"]


async def test_live_and_known_among(store: CallStore) -> None:
    await store.create_call(new_call("call-live"))
    await store.create_call(new_call("call-over"))
    await store.apply("call-over", "x", set_status(Status.COMPLETED))
    ids = ["call-live", "call-over", "call-unknown"] + [f"call-x{n}" for n in range(1200)]
    assert await store.live_among(ids) == {"call-live"}
    assert await store.known_among(ids) == {"call-live", "call-over"}
    assert await store.live_among([]) == set()


async def test_unfinished_rooms_are_live_dialled_calls_whose_room_never_finished(
    store: CallStore, clock: FakeClock
) -> None:
    """The rooms the reaper asks LiveKit about: calls dialled before the bound, still live,
    whose room never said it finished; on a sandbox, one server's own only."""

    def call(call_id: str, instance: str | None = None) -> NewCall:
        return dataclasses.replace(new_call(call_id), sandbox_instance=instance)

    for call_id, instance in [("call-a", None), ("call-b", "me"), ("call-c", "them")]:
        await store.create_call(call(call_id, instance))
        await store.start_dial(call_id)
    await store.create_call(call("call-undialled"))
    await store.create_call(call("call-finished"))
    await store.start_dial("call-finished")
    await store.apply("call-finished", "room_finished", lambda _state: None, room_finished=True)
    await store.create_call(call("call-over"))
    await store.start_dial("call-over")
    await store.apply("call-over", "hangup", set_status(Status.CANCELED))
    assert await store.unfinished_rooms(clock.now - 1) == []  # dialled too recently
    clock.advance(61)
    await store.create_call(call("call-late"))
    await store.start_dial("call-late")
    real = await store.unfinished_rooms(clock.now - 60)
    assert [c.call_id for c in real] == ["call-a"]  # on a real LiveKit
    assert real[0].last_seen == clock.now - 61  # its dial's start, the last heard of it
    assert [c.call_id for c in await store.unfinished_rooms(clock.now - 60, "me")] == ["call-b"]


async def test_a_lost_call_was_last_heard_at_its_last_turn_not_its_final_report(
    store: CallStore, clock: FakeClock
) -> None:
    """Its webhooks all lost, a call ends when the server last heard of it. The agent's final
    report comes after its analysis (here 60 s after the answer, the last turn at 12.5 s):
    counted as heard then, the call's talk_s read 60 s, not 12.5."""
    from common.contracts import AgentReport, CallReport, TranscriptTurn

    await store.create_call(new_call())
    await store.start_dial(CALL)
    clock.advance(2)
    answered = clock.now
    await store.record_reports([AgentReport(call_id=CALL, seq=0, kind="answered", at=answered)])
    clock.advance(60)
    turns = [
        TranscriptTurn(role="agent", text="Hello", at_s=0.5),
        TranscriptTurn(role="callee", text="Bye", at_s=12.5),
    ]
    final = CallReport(transcript=turns, summary="short")
    await store.record_reports(
        [AgentReport(call_id=CALL, seq=1, kind="final", at=clock.now, final=final)]
    )
    clock.advance(61)
    [lost] = await store.unfinished_rooms(clock.now - 60)
    assert lost.last_seen == answered + 12.5


async def test_unreported_dialled_are_the_calls_whose_agent_may_never_have_joined(
    store: CallStore, clock: FakeClock
) -> None:
    """The calls the reaper asks LiveKit about when the wait for their agent was lost with
    its server: dialled before the bound, live, no agent report yet, their line and room not
    known to have ended; on a sandbox, one server's own only."""
    from common.contracts import AgentReport

    def call(call_id: str, instance: str | None = None) -> NewCall:
        return dataclasses.replace(new_call(call_id), sandbox_instance=instance)

    for call_id, instance in [("call-a", None), ("call-b", "me"), ("call-c", "them")]:
        await store.create_call(call(call_id, instance))
        await store.start_dial(call_id)
    await store.create_call(call("call-undialled"))
    for call_id in ("call-reported", "call-left", "call-finished", "call-over"):
        await store.create_call(call(call_id))
        await store.start_dial(call_id)
    await store.record_reports(
        [AgentReport(call_id="call-reported", seq=0, kind="answered", at=clock.now)]
    )
    await store.apply("call-left", "participant_left", lambda _state: None, callee_left=True)
    await store.apply("call-finished", "room_finished", lambda _state: None, room_finished=True)
    await store.apply("call-over", "hangup", set_status(Status.CANCELED))
    assert await store.unreported_dialled(clock.now - 1) == []  # dialled too recently
    clock.advance(21)
    assert await store.unreported_dialled(clock.now - 20) == ["call-a"]  # a real LiveKit
    assert await store.unreported_dialled(clock.now - 20, "me") == ["call-b"]


async def test_agent_gone_unsettled_are_the_live_calls_whose_agent_left(
    store: CallStore, clock: FakeClock
) -> None:
    """The calls whose wait after their agent left (AGENT_GONE_GRACE_S) a restart may have
    lost: live, their agent's participant_left before the bound, their line and room not
    known to have ended; on a sandbox, one server's own only."""

    def call(call_id: str, instance: str | None = None) -> NewCall:
        return dataclasses.replace(new_call(call_id), sandbox_instance=instance)

    agent: dict[str, object] = {"agent_left": True}
    for call_id, instance in [("call-a", None), ("call-b", "me"), ("call-c", "them")]:
        await store.create_call(call(call_id, instance))
        await store.apply(call_id, "participant_left", lambda _state: None, detail=agent)
    await store.create_call(call("call-callee"))  # a participant_left of another's
    await store.apply(
        "call-callee", "participant_left", lambda _state: None, detail={"sip_call_status": "x"}
    )
    await store.create_call(call("call-left"))  # the callee left after the agent
    await store.apply("call-left", "participant_left", lambda _state: None, detail=agent)
    await store.apply("call-left", "participant_left", lambda _state: None, callee_left=True)
    await store.create_call(call("call-over"))
    await store.apply("call-over", "participant_left", lambda _state: None, detail=agent)
    await store.apply("call-over", "hangup", set_status(Status.CANCELED))
    assert await store.agent_gone_unsettled(clock.now - 1) == []  # left too recently
    clock.advance(6)
    assert await store.agent_gone_unsettled(clock.now - 5) == ["call-a"]  # a real LiveKit
    assert await store.agent_gone_unsettled(clock.now - 5, "me") == ["call-b"]


async def test_lost_sandbox_calls_are_one_instances_live_calls_from_before(
    backend: Backend, clock: FakeClock
) -> None:
    """The calls a server left in its embedded sandbox: its own (another server's, or one on
    a real LiveKit, never), live, created before the bound, their rooms never finished."""
    me, other = "host-a:8000", "host-a:8001"

    def mine(call_id: str, instance: str | None = me) -> NewCall:
        return dataclasses.replace(new_call(call_id), sandbox_instance=instance)

    first = await backend.open()
    for call_id in ("call-ringing", "call-answered", "call-over", "call-finishing"):
        await first.create_call(mine(call_id))
        await first.start_dial(call_id)
        clock.advance(1)
    await first.create_call(mine("call-undialled"))
    await first.create_call(mine("call-other", other))
    await first.start_dial("call-other")
    await first.create_call(mine("call-real-livekit", None))
    await first.start_dial("call-real-livekit")
    undialled_at = clock.now
    clock.advance(2)
    await first.apply("call-ringing", "participant_joined", set_status(Status.RINGING))
    clock.advance(3)
    answered_at = clock.now
    await first.apply("call-answered", "answered", set_status(Status.IN_PROGRESS, answered=True))
    await first.apply("call-over", "room_finished", set_status(Status.BUSY), room_finished=True)
    await first.apply("call-finishing", "room_finished", nothing, room_finished=True)
    await first.close()

    store = await backend.open()  # as the server starting again would
    try:
        clock.advance(5)
        started = clock.now
        await store.create_call(mine("call-this-run"))  # this run's sandbox holds it
        await store.start_dial("call-this-run")
        lost = await store.lost_sandbox_calls(me, started)
        assert [(c.call_id, c.dialled) for c in lost] == [
            ("call-ringing", True),
            ("call-answered", True),
            ("call-undialled", False),
        ]
        # The last the server heard of each: its last change or timeline entry.
        assert [c.last_seen for c in lost] == [answered_at - 3, answered_at, undialled_at]
        other_lost = await store.lost_sandbox_calls(other, started)
        assert [(c.call_id, c.dialled) for c in other_lost] == [("call-other", True)]
        assert await store.lost_sandbox_calls("host-b:8000", started) == []
        # Whose sandboxes hold such calls (this run's, the over and the real LiveKit's: not)
        assert await store.sandbox_owners(started) == [me, other]
        await store.apply("call-ringing", "sandbox_restarted", set_status(Status.FAILED))
        assert [c.call_id for c in await store.lost_sandbox_calls(me, started)] == [
            "call-answered",
            "call-undialled",
        ]
    finally:
        await store.close()


async def test_probe_write(store: CallStore) -> None:
    await store.probe_write("host:8000")
    await store.probe_write("host:8000")  # an upsert: the table stays one row per instance


# ------------------------------------------------------------------ apply


async def test_a_call_ends_at_the_first_sign_of_its_end_not_when_it_is_settled(
    store: CallStore, clock: FakeClock
) -> None:
    """The callee left at t+10 (LiveKit's createdAt, whole seconds), the webhook came a minute
    later (retried while the database was down): talk time was the minute. An unanswered
    room_finished settled after the grace period ended the call at its end, not the grace's."""
    await store.create_call(new_call())
    start = clock.now
    clock.advance(5)
    await store.apply(CALL, "answered", set_status(Status.IN_PROGRESS, answered=True))
    clock.advance(65)
    left = await store.apply(
        CALL,
        "participant_left",
        lambda _state: None,
        callee_left=True,
        event_at=start + 15,  # 10 s after the answer, by LiveKit's clock
    )
    assert left.after is not None and left.after.callee_left_at == start + 16
    applied = await store.apply(
        CALL, "room_finished", set_status(Status.COMPLETED), room_finished=True
    )
    assert applied.after is not None
    assert applied.after.ended_at == start + 16  # the end's second bounds it from above
    assert applied.after.talk_s == 11.0

    other = "call-000000000002"
    await store.create_call(new_call(other))
    placed = clock.now
    clock.advance(3)
    await store.apply(other, "room_finished", lambda _state: None, room_finished=True)
    clock.advance(10)  # the grace period: late evidence of an answer may still come
    settled = await store.apply(other, "grace_over", set_status(Status.NO_ANSWER))
    assert settled.after is not None and settled.after.ring_s == 3.0
    assert settled.after.ended_at == placed + 3

    # An event time from a clock far off (or no time) is not believed: the time it came is.
    third = "call-000000000003"
    await store.create_call(new_call(third))
    clock.advance(2)
    late = await store.apply(
        third, "room_finished", set_status(Status.FAILED), room_finished=True, event_at=1.0
    )
    assert late.after is not None and late.after.ended_at == clock.now


async def test_the_grace_counts_from_when_a_late_room_finished_came(
    store: CallStore, clock: FakeClock
) -> None:
    """A room_finished delivered late is dated back to the room's end, but the grace after it
    (for the answer, held back by the same outage) counts from when it came: counted from
    the room's end, an answered call was settled no_answer as the webhook arrived."""
    await store.create_call(new_call())
    start = clock.now
    clock.advance(30)  # 29 s late: LiveKit retried it through a database outage
    await store.apply(
        CALL, "room_finished", lambda _state: None, room_finished=True, event_at=start + 1
    )
    call = await store.get_call(CALL, with_timeline=False)
    assert call is not None and call.room_finished_at == start + 2  # the room's end
    assert await store.graceless_finished(clock.now - 10) == []  # it came just now
    clock.advance(11)
    assert await store.graceless_finished(clock.now - 10) == [CALL]
    # It came late: it waits out the longer bound given for that (the agent's reports, held
    # back by the same outage, are retried up to 40 s apart).
    assert await store.graceless_finished(clock.now - 10, clock.now - 40) == []
    clock.advance(30)
    assert await store.graceless_finished(clock.now - 10, clock.now - 40) == [CALL]


async def test_apply_changes_status_and_timeline(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call())
    seen: list[CallState] = []

    def decide(state: CallState) -> Change:
        seen.append(state)
        return Change(Status.RINGING, "ringing now")

    clock.advance(2)
    applied = await store.apply(
        CALL, "participant_joined", decide, event_id="EV_1", detail={"a": 1}
    )
    assert seen == [CallState(Status.DIALING, dialled=False)]
    assert applied.change == Change(Status.RINGING, "ringing now")
    assert not applied.duplicate and not applied.unknown_call
    assert applied.before is not None and applied.before.status is Status.DIALING
    assert applied.after is not None and applied.after.status is Status.RINGING
    assert applied.after.reason == "ringing now"
    assert applied.after.updated_at == clock.now
    assert applied.after.outcome is None and applied.after.ended_at is None

    call = await store.get_call(CALL)
    assert call is not None
    assert call.timeline[-1] == TimelineEntry(
        "participant_joined", "dialing", "ringing", {"a": 1}, clock.now, "EV_1"
    )
    assert call.timeline[-1].to_json() == {
        "event": "participant_joined",
        "from": "dialing",
        "to": "ringing",
        "at": iso_time(clock.now),
        "event_id": "EV_1",
        "detail": {"a": 1},
    }


async def test_apply_answer_and_final_outcome(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call())
    start = clock.now
    clock.advance(5)
    await store.apply(CALL, "track_published", set_status(Status.IN_PROGRESS, None, True))
    answered_at = clock.now
    clock.advance(5)
    # A later change that does not say "answered" never un-answers the call.
    await store.apply(CALL, "x", set_status(Status.IN_PROGRESS, None, False))
    clock.advance(32)
    applied = await store.apply(CALL, "room_finished", set_status(Status.COMPLETED))
    call = applied.after
    assert call is not None
    assert call.status is Status.COMPLETED and call.is_final
    assert call.outcome == "completed"
    assert call.answered and call.answered_at == answered_at
    assert call.ended_at == clock.now
    assert call.duration_s() == 42.0
    assert call.created_at == start
    doc = call.to_json(with_timeline=False)
    assert doc["status"] == doc["outcome"] == "completed"
    assert (doc["ring_s"], doc["talk_s"]) == (5.0, 37.0)
    assert doc["answered_at"] == iso_time(answered_at)
    assert doc["room"] == doc["call_id"] == CALL
    assert "timeline" not in doc


async def test_apply_keeps_earlier_reason_when_change_has_none(store: CallStore) -> None:
    await store.create_call(new_call())
    await store.apply(CALL, "x", set_status(Status.RINGING, "first reason"))
    applied = await store.apply(CALL, "x", set_status(Status.NO_ANSWER))
    assert applied.after is not None and applied.after.reason == "first reason"
    assert applied.after.outcome == "no_answer"


async def test_apply_without_change_records_the_event(store: CallStore) -> None:
    await store.create_call(new_call())
    applied = await store.apply(CALL, "room_started", nothing, event_id="EV_9")
    assert applied.change is None and applied.events == ()
    assert applied.before == applied.after
    assert applied.after is not None and applied.after.status is Status.DIALING
    call = await store.get_call(CALL)
    assert call is not None
    assert [(e.kind, e.from_status, e.to_status, e.event_id) for e in call.timeline] == [
        ("created", None, "dialing", None),
        ("room_started", None, None, "EV_9"),
    ]


async def test_duplicate_event_id_is_applied_once(store: CallStore) -> None:
    await store.create_call(new_call())
    first = await store.apply(
        CALL, "participant_joined", set_status(Status.RINGING), event_id="EV_1"
    )
    assert first.change is not None and not first.duplicate
    asked: list[CallState] = []

    def decide(state: CallState) -> Change:
        asked.append(state)
        return Change(Status.FAILED)

    again = await store.apply(CALL, "participant_joined", decide, event_id="EV_1")
    assert again == Applied(duplicate=True)
    assert asked == []  # the decision is not even asked for
    call = await store.get_call(CALL)
    assert call is not None and call.status is Status.RINGING
    assert [e.event_id for e in call.timeline].count("EV_1") == 1


async def test_one_event_applied_concurrently_changes_the_call_once(store: CallStore) -> None:
    """Two deliveries of one webhook at the same moment (two servers, or LiveKit's retry)."""
    await store.create_call(new_call())
    results = await asyncio.gather(
        *(
            store.apply(CALL, "participant_joined", set_status(Status.RINGING), event_id="EV_C")
            for _ in range(8)
        )
    )
    assert sum(1 for r in results if not r.duplicate) == 1
    call = await store.get_call(CALL)
    assert call is not None and [e.event_id for e in call.timeline].count("EV_C") == 1


async def test_events_without_id_are_never_duplicates(store: CallStore) -> None:
    await store.create_call(new_call())
    for _ in range(3):
        applied = await store.apply(CALL, "note", nothing)
        assert not applied.duplicate
    call = await store.get_call(CALL)
    assert call is not None and len(call.timeline) == 4


async def test_apply_to_unknown_call(store: CallStore) -> None:
    applied = await store.apply(
        "call-unknown", "room_finished", set_status(Status.FAILED), event_id="E"
    )
    assert applied == Applied(unknown_call=True)
    # Nothing was stored for it: a later call with that id sees no such event.
    await store.create_call(new_call("call-unknown"))
    call = await store.get_call("call-unknown")
    assert call is not None and [e.kind for e in call.timeline] == ["created"]


class DecideFailed(Exception):
    pass


async def test_failing_decide_rolls_back_and_surfaces(store: CallStore) -> None:
    await store.create_call(new_call())
    before = await store.get_call(CALL)

    def decide(_state: CallState) -> Change:
        raise DecideFailed("boom")

    with pytest.raises(DecideFailed, match="boom"):
        await store.apply(CALL, "room_finished", decide, event_id="EV_X", room_finished=True)
    assert await store.get_call(CALL) == before  # room_finished_at was rolled back too
    # The event id was not consumed: a retry is applied, and the store is usable.
    applied = await store.apply(
        CALL, "room_finished", set_status(Status.COMPLETED), event_id="EV_X"
    )
    assert applied.after is not None and applied.after.status is Status.COMPLETED


async def test_failure_after_the_update_leaves_nothing_half_written(store: CallStore) -> None:
    # decide succeeds and the UPDATE runs; storing the event then fails (detail is not JSON).
    await store.create_call(new_call())
    before = await store.get_call(CALL)
    with pytest.raises(TypeError, match="not JSON serializable"):
        await store.apply(
            CALL,
            "room_finished",
            set_status(Status.COMPLETED),
            event_id="EV_Y",
            detail={"bad": object()},
        )
    after = await store.get_call(CALL)
    assert after == before
    assert after is not None and after.status is Status.DIALING and after.ended_at is None
    assert await store.count_live() == 1
    events = await store.claim_stale_events(1e12, 60, 100)
    assert [e.type for e in events] == ["call.dialing"]  # the rolled-back change left none


async def test_runtime_error_in_decide_is_not_reported_as_closed(store: CallStore) -> None:
    await store.create_call(new_call())

    def decide(_state: CallState) -> Change:
        raise RuntimeError("decision failed")

    with pytest.raises(RuntimeError, match="decision failed"):
        await store.apply(CALL, "room_finished", decide)


async def test_webhook_sequence_through_next_state(store: CallStore, clock: FakeClock) -> None:
    await store.create_call(new_call())
    signals = [
        Signal("participant_joined", CALL, True, "ringing"),
        Signal("track_published", CALL, True, "active"),
        Signal("participant_left", CALL, True, "hangup", "CLIENT_INITIATED"),
        Signal("room_finished", CALL),
    ]
    for n, signal in enumerate(signals):
        clock.advance(1)
        await store.apply(
            signal.room,
            signal.event,
            decide_by(signal),
            event_id=f"EV_{n}",
            room_finished=signal.event == "room_finished",
        )
    call = await store.get_call(CALL)
    assert call is not None
    assert call.status is Status.COMPLETED and call.answered
    assert [(e.kind, e.to_status) for e in call.timeline] == [
        ("created", "dialing"),
        ("participant_joined", "ringing"),
        ("track_published", "in_progress"),
        ("participant_left", None),
        ("room_finished", "completed"),
    ]


# ------------------------------------------------------------------ idempotency


async def test_idempotency_key_is_recorded_with_its_call(store: CallStore) -> None:
    assert await store.get_idempotent("alice", "k1") is None
    claim = IdempotencyClaim("alice", "k1", "h1")
    await store.create_call(new_call("call-a"), claim=claim)
    # Bound before any answer: a retry learns the call, with no answer yet.
    assert await store.get_idempotent("alice", "k1") == StoredAnswer("call-a", "h1")
    assert await store.get_idempotent("bob", "k1") is None  # keys are per client
    assert await store.get_idempotent("alice", "k2") is None
    await store.answer_idempotent(
        "alice", "k1", "call-a", 200, {"status": "success", "call_id": "call-a"}
    )
    assert await store.get_idempotent("alice", "k1") == StoredAnswer(
        "call-a", "h1", 200, {"status": "success", "call_id": "call-a"}
    )
    # A stalled server's answer about a call the key is no longer bound to: not stored (it
    # wrote call-a's "failed" over the answer of the retry's new call).
    await store.release_placement("call-a")
    await store.create_call(new_call("call-b"), claim=claim)
    await store.answer_idempotent("alice", "k1", "call-b", 200, {"call_id": "call-b"})
    await store.answer_idempotent("alice", "k1", "call-a", 200, {"call_id": "call-a"})
    assert await store.get_idempotent("alice", "k1") == StoredAnswer(
        "call-b", "h1", 200, {"call_id": "call-b"}
    )


async def test_a_taken_key_records_nothing(store: CallStore) -> None:
    claim = IdempotencyClaim("alice", "k1", "h1")
    await store.create_call(new_call("call-a"), claim=claim)
    with pytest.raises(KeyTaken) as taken:
        await store.create_call(new_call("call-b"), claim=claim)
    assert taken.value.stored == StoredAnswer("call-a", "h1")
    assert await store.get_call("call-b") is None  # the second call was never recorded


async def test_one_key_sent_concurrently_binds_one_call(store: CallStore) -> None:
    claim = IdempotencyClaim("alice", "k1", "h1")
    results = await asyncio.gather(
        *(store.create_call(new_call(f"call-{n:012d}"), claim=claim) for n in range(8)),
        return_exceptions=True,
    )
    placed = [r for r in results if isinstance(r, Applied)]
    assert len(placed) == 1
    assert all(isinstance(r, KeyTaken) for r in results if not isinstance(r, Applied))
    assert await store.count_live() == 1


async def test_release_frees_the_key_and_the_rate_share(store: CallStore, clock: FakeClock) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=1)
    claim = IdempotencyClaim("alice", "k1", "h1")
    await store.create_call(new_call("call-a", client="alice"), claim=claim, limits=limits)
    bob = IdempotencyClaim("bob", "k1", "h1")  # the same key, another client's
    await store.create_call(new_call("call-bob", client="bob"), claim=bob, limits=limits)
    await store.release_placement("call-other")  # another call's release: no effect
    assert await store.get_idempotent("alice", "k1") is not None
    await store.release_placement("call-a")  # the key bound to call-a, found by its call id
    assert await store.get_idempotent("alice", "k1") is None
    assert await store.get_idempotent("bob", "k1") is not None  # call-bob's key stays
    # The rate share came back too: alice may place her one call of this minute.
    await store.create_call(new_call("call-b", client="alice"), claim=claim, limits=limits)


def _nobody_called(state: CallState) -> Change | None:
    undialled = state.status is Status.DIALING and not state.dialled
    return Change(Status.FAILED, "nobody was called") if undialled else None


async def test_the_reaper_settles_a_call_never_dialled_unless_its_dial_was_marked(
    store: CallStore,
) -> None:
    """The reaper found both calls undialled; call-b's server, stalled past the bound, went
    on and marked its dial before the reaper settled it. It was settled "nobody was called"
    all the same and its key freed: a retry called the person again."""
    await store.create_call(new_call("call-a"), claim=IdempotencyClaim("alice", "k1", "h1"))
    await store.create_call(new_call("call-b"), claim=IdempotencyClaim("alice", "k2", "h2"))
    await store.start_dial("call-b")
    settled = await store.settle_never_dialled("call-a", _nobody_called)
    kept = await store.settle_never_dialled("call-b", _nobody_called)
    assert settled.change == Change(Status.FAILED, "nobody was called") and settled.events
    assert kept.change is None and kept.events == ()
    a, b = await store.get_call("call-a"), await store.get_call("call-b")
    assert a is not None and b is not None
    assert (a.status, b.status) == (Status.FAILED, Status.DIALING)
    assert await store.get_idempotent("alice", "k1") is None  # released with the settling
    assert await store.get_idempotent("alice", "k2") is not None  # its call is being placed
    assert [e.kind for e in b.timeline] == ["created"]  # no "reaped" line for nothing
    again = await store.settle_never_dialled("call-a", _nobody_called)  # another server's pass
    assert again.change is None
    a_again = await store.get_call("call-a")
    assert a_again is not None and [e.kind for e in a_again.timeline] == ["created", "reaped"]


# ------------------------------------------------------------------ admission


async def test_the_live_cap_holds(store: CallStore, clock: FakeClock) -> None:
    limits = AdmissionLimits(max_live=2, per_minute=100)
    for n in range(2):
        await store.create_call(new_call(f"call-{n:012d}", client="a"), limits=limits)
    with pytest.raises(Refused) as refused:
        await store.create_call(new_call("call-x", client="b"), limits=limits)
    assert refused.value.refusal.limit == "live"
    assert await store.admission_refusal("b", limits, clock.now) == refused.value.refusal
    await store.apply("call-000000000000", "x", set_status(Status.COMPLETED))
    await store.create_call(new_call("call-x", client="b"), limits=limits)  # a slot freed


async def test_the_rate_holds_per_client_over_a_minute(store: CallStore, clock: FakeClock) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=2)
    await store.create_call(new_call("call-1", client="a"), limits=limits)
    clock.advance(20)
    await store.create_call(new_call("call-2", client="a"), limits=limits)
    with pytest.raises(Refused) as refused:
        await store.create_call(new_call("call-3", client="a"), limits=limits)
    # the first of the minute ages out, once its second ended a minute ago
    assert refused.value.refusal == Refusal("rate", 41)
    await store.create_call(new_call("call-b1", client="b"), limits=limits)  # others are free
    clock.advance(41)
    await store.create_call(new_call("call-3", client="a"), limits=limits)


async def test_a_release_gives_one_share_back_however_often_it_comes(
    store: CallStore, clock: FakeClock
) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=2)
    for call_id in ("call-a", "call-b"):
        await store.create_call(new_call(call_id, client="alice"), limits=limits)
    await store.release_placement("call-a")
    await store.release_placement("call-a")  # again (a retry): no second share
    await store.create_call(new_call("call-c", client="alice"), limits=limits)
    with pytest.raises(Refused):
        await store.create_call(new_call("call-d", client="alice"), limits=limits)


async def test_the_rate_retry_after_follows_the_oldest_call_still_counted(
    store: CallStore, clock: FakeClock
) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=2)
    await store.create_call(new_call("call-1", client="a"), limits=limits)
    clock.advance(10)
    await store.create_call(new_call("call-2", client="a"), limits=limits)
    await store.release_placement("call-1")  # never dialled: it counts no more
    clock.advance(10)
    await store.create_call(new_call("call-3", client="a"), limits=limits)
    # Full again; the oldest call counted is call-2, placed 10 s ago (its second ends at 11).
    assert await store.admission_refusal("a", limits, clock.now) == Refusal("rate", 51)


async def test_the_reaper_purges_only_rate_counts_out_of_the_window(
    store: CallStore, clock: FakeClock
) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=2)
    await store.create_call(new_call("call-1", client="a"), limits=limits)
    clock.advance(30)
    await store.create_call(new_call("call-2", client="a"), limits=limits)
    assert await store.purge_rate_buckets(clock.now) == 0  # both still count
    clock.advance(31)
    assert await store.purge_rate_buckets(clock.now) == 1  # the first left the window
    await store.create_call(new_call("call-3", client="a"), limits=limits)  # call-2 and this
    with pytest.raises(Refused):
        await store.create_call(new_call("call-4", client="a"), limits=limits)


async def test_a_clock_stepped_back_does_not_count_the_calls_dated_ahead_of_it(
    store: CallStore, clock: FakeClock
) -> None:
    """The server's clock stepped back an hour (NTP): the calls of the hour before it were
    dated ahead of now, and every second of that hour counted in the minute's rate, whatever
    the minute: a client at its limit was refused for an hour, each 429 saying to retry
    within the minute. Calls dated more than the rate's window ahead count no more."""
    limits = AdmissionLimits(max_live=100, per_minute=2)
    for n in range(40):  # about two calls a minute, the limit, for the last 20 minutes
        for client in ("a", "b"):
            call = new_call(f"call-{client}{n:011d}", client=client)
            await store.create_call(call, limits=limits)
        clock.advance(31)
    clock.advance(-3600)
    assert await store.admission_refusal("a", limits, clock.now) is None
    for n in range(2):  # the whole minute's rate
        await store.create_call(new_call(f"call-back-{n}", client="a"), limits=limits)
    with pytest.raises(Refused):
        await store.create_call(new_call("call-back-3", client="a"), limits=limits)
    # The reaper drops those dated ahead (every REAPER_INTERVAL_S, not each call's admission:
    # they no longer count meanwhile)
    assert await store.purge_rate_buckets(clock.now) == 80
    # 50 minutes on, the clock is where the old calls were dated: they were dropped, and
    # count no more
    clock.advance(3600 - 1240 + 620)
    for client in ("a", "b"):
        assert await store.admission_refusal(client, limits, clock.now) is None


async def test_concurrent_admissions_never_exceed_the_cap(store: CallStore) -> None:
    limits = AdmissionLimits(max_live=5, per_minute=1000)
    results = await asyncio.gather(
        *(store.create_call(new_call(f"call-{n:012d}"), limits=limits) for n in range(40)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Applied) for r in results) == 5
    assert all(isinstance(r, Refused) for r in results if not isinstance(r, Applied))
    assert await store.count_live() == 5


async def test_a_bound_key_is_answered_before_the_limits(store: CallStore) -> None:
    """A retry of a placed call is never refused by a limit the call itself used up."""
    limits = AdmissionLimits(max_live=1, per_minute=1)
    claim = IdempotencyClaim("a", "k", "h")
    await store.create_call(new_call("call-a", client="a"), claim=claim, limits=limits)
    with pytest.raises(KeyTaken):
        await store.create_call(new_call("call-b", client="a"), claim=claim, limits=limits)


# ------------------------------------------------------------------ the outbox


async def test_every_change_writes_its_events(store: CallStore, clock: FakeClock) -> None:
    created = await store.create_call(new_call())
    assert [e.type for e in created.events] == ["call.dialing"]
    assert created.events[0].data["status"] == "dialing"
    assert created.events[0].from_status is None
    ringing = await store.apply(CALL, "x", set_status(Status.RINGING))
    answered = await store.apply(CALL, "x", set_status(Status.IN_PROGRESS, answered=True))
    ended = await store.apply(CALL, "x", set_status(Status.COMPLETED))
    assert [e.type for e in ringing.events] == ["call.ringing"]
    assert [e.type for e in answered.events] == ["call.answered"]
    assert [e.type for e in ended.events] == ["call.ended"]
    assert ended.events[0].from_status == "in_progress"
    assert ended.events[0].data["status"] == "completed"
    ids = [e.id for a in (created, ringing, answered, ended) for e in a.events]
    assert ids == sorted(ids) and len(set(ids)) == 4


async def test_a_late_answer_after_the_room_finished_writes_answered_then_ended(
    store: CallStore,
) -> None:
    await store.create_call(new_call())
    await store.apply(CALL, "x", set_status(Status.RINGING))
    applied = await store.apply(CALL, "x", set_status(Status.COMPLETED, answered=True))
    assert [e.type for e in applied.events] == ["call.answered", "call.ended"]


async def test_unacked_events_are_taken_over_after_the_lease(
    store: CallStore, clock: FakeClock
) -> None:
    created = await store.create_call(new_call())
    await store.apply(CALL, "x", set_status(Status.RINGING))
    # Within the lease, the server that wrote them holds them.
    assert await store.claim_stale_events(clock.now + 1, 60, 100) == []
    later = clock.now + 120  # that server died: its lease ran out
    taken = await store.claim_stale_events(later, 60, 100)
    assert [e.type for e in taken] == ["call.dialing", "call.ringing"]
    assert taken[0] == created.events[0]
    assert await store.claim_stale_events(later, 60, 100) == []  # taken: held for another lease
    await store.ack_events([taken[0].id], later)
    again = await store.claim_stale_events(later + 120, 60, 100)
    assert [e.type for e in again] == ["call.ringing"]  # acked events never come back


async def test_claims_are_batched_oldest_first(store: CallStore, clock: FakeClock) -> None:
    for n in range(5):
        await store.create_call(new_call(f"call-{n:012d}"))
    first = await store.claim_stale_events(clock.now + 120, 60, 2)
    second = await store.claim_stale_events(clock.now + 120, 60, 10)
    assert [e.call_id for e in first] == ["call-000000000000", "call-000000000001"]
    assert len(second) == 3 and min(e.id for e in second) > max(e.id for e in first)


async def test_dispatched_events_are_purged(store: CallStore, clock: FakeClock) -> None:
    created = await store.create_call(new_call())
    await store.ack_events([e.id for e in created.events], clock.now)
    assert await store.purge_dispatched_events(clock.now - 1) == 0
    assert await store.purge_dispatched_events(clock.now + 1) == 1


async def test_rate_retry_after_rounds_up_and_the_window_slides(
    store: CallStore, clock: FakeClock
) -> None:
    limits = AdmissionLimits(max_live=100, per_minute=1)
    await store.create_call(new_call("call-1", client="a"), limits=limits)
    clock.advance(59.2)
    assert await store.admission_refusal("a", limits, clock.now) == Refusal("rate", 2)
    clock.advance(1.8)  # the first call's second ended a minute ago
    assert await store.admission_refusal("a", limits, clock.now) is None
    await store.create_call(new_call("call-2", client="a"), limits=limits)


async def test_the_rate_never_passes_its_limit_in_any_minute(
    store: CallStore, clock: FakeClock
) -> None:
    """Calls are counted by whole seconds: those made late in a second counted for 59 s
    only, so the next ones were admitted 59.1 s after them, up to twice the limit within a
    minute (probe AY: 42 calls in 60 s at 40 a minute, across three servers). A second
    counts until it ended a minute ago."""
    limits = AdmissionLimits(max_live=100, per_minute=3)
    clock.advance(0.9)  # late in its second
    burst = clock.now
    for n in range(3):
        await store.create_call(new_call(f"call-{n}", client="a"), limits=limits)
    for later in (59.1, 59.6, 59.99):  # within a minute of the burst: still full
        clock.now = burst + later
        refusal = await store.admission_refusal("a", limits, clock.now)
        assert refusal is not None and refusal.limit == "rate", later
        assert clock.now + refusal.retry_after_s >= burst + 60
    clock.now = burst + 60.1  # its second ended a minute ago
    assert await store.admission_refusal("a", limits, clock.now) is None


# ------------------------------------------------------------------ customer webhook deliveries


async def test_a_claim_is_renewed_only_while_nobody_claimed_the_delivery_since(
    store: CallStore, clock: FakeClock
) -> None:
    from common.storage import programs

    url = "https://example.com/hooks"
    await store.create_call(dataclasses.replace(new_call(), webhook_url=url))  # call.dialing
    (first,) = await store.claim_due_deliveries(clock.now, 20, 10)
    clock.advance(30)  # this server stalled past its lease; nobody claimed it meanwhile
    assert await store.renew_delivery_claim(first.id, 20)
    assert await store.claim_due_deliveries(clock.now, 20, 10) == []  # held again
    clock.advance(30)
    sql = cast(SqlCallStore, store)
    other = programs.claim_due_deliveries(sql.dialect, clock.now, 20, 10, "other:1@host")
    assert len(await sql._run(other, write=True)) == 1
    assert not await store.renew_delivery_claim(first.id, 20)  # the other server's to send


async def test_a_record_takes_its_calls_next_delivery(store: CallStore, clock: FakeClock) -> None:
    """Of one call and URL only the earliest pending delivery is claimable; recording it
    claims the next one for the recorder in the same transaction, or says when it is due."""
    url = "https://example.com/hooks"
    await store.create_call(dataclasses.replace(new_call(), webhook_url=url))  # call.dialing
    clock.advance(1)
    (first,) = await store.claim_due_deliveries(clock.now, 20, 10)
    assert first.event_type == "call.dialing"
    first_held_until = clock.now + 20
    await store.apply(CALL, "participant_joined", set_status(Status.RINGING), event_id="EV_1")
    await store.apply(CALL, "answered", set_status(Status.IN_PROGRESS, answered=True))
    answered_at = clock.now
    clock.advance(1)
    # The later ones wait behind the one in flight: nothing to claim; a look is due when its
    # claim runs out (its holder may have died: then another server takes it over)
    assert await store.claim_due_deliveries(clock.now, 20, 10) == []
    assert await store.next_delivery_at(unclaimed_at=clock.now) == first_held_until
    assert await store.next_delivery_at() is not None  # (but pending)

    recorded = await store.record_delivery(first.id, DeliveryOutcome("delivered", 204), 20)
    second = recorded.taken
    assert second is not None and second.event_type == "call.ringing"
    assert await store.claim_due_deliveries(clock.now, 20, 10) == []  # taken: held
    # Retried 5 s later: nothing taken (it is still the earliest), and it says when.
    retry = DeliveryOutcome("pending", 503, "HTTP 503", clock.now + 5)
    assert await store.record_delivery(second.id, retry, 20) == RecordedDelivery(
        next_at=clock.now + 5
    )
    assert await store.next_delivery_at(unclaimed_at=clock.now) == clock.now + 5
    clock.advance(5)
    (again,) = await store.claim_due_deliveries(clock.now, 20, 10)
    assert again.id == second.id
    # Without take_next (a sender stopping) the next one stays for any claim.
    assert await store.record_delivery(again.id, DeliveryOutcome("failed", 500)) == (
        RecordedDelivery(next_at=answered_at)  # due since it was written
    )
    (third,) = await store.claim_due_deliveries(clock.now, 20, 10)
    assert third.event_type == "call.answered"
    # 410 Gone: nothing of this call follows.
    assert await store.record_delivery(third.id, DeliveryOutcome("stopped", 410), 20) == (
        RecordedDelivery()
    )


async def test_the_purge_keeps_a_delivery_redelivered_while_it_runs(
    store: CallStore, clock: FakeClock
) -> None:
    """The purge deleted an old event, then its deliveries by event: a redeliver committed
    between its statements (PostgreSQL runs them side by side) answered 202 "pending", and
    the delivery was gone. Now a redeliver that comes first keeps the delivery and its
    event; one that comes during the purge waits for it and finds the delivery gone (404)."""
    await store.create_call(dataclasses.replace(new_call(), webhook_url="https://e.com/h"))
    (sent,) = await store.claim_due_deliveries(clock.now, 20, 10)
    await store.record_delivery(sent.id, DeliveryOutcome("delivered", 204))
    await store.ack_events([sent.event_id], clock.now)
    clock.advance(8 * 86400)
    assert await store.redeliver(sent.id) is not None  # queued again before the purge
    assert await store.purge_dispatched_events(clock.now - 7 * 86400) == 0
    (kept,) = await store.list_deliveries(sent.call_id)
    assert kept.state == "pending" and kept.event_type == "call.dialing"
    await store.record_delivery(kept.id, DeliveryOutcome("delivered", 204))
    if not isinstance(store, PostgresCallStore):
        return  # SQLite runs one write at a time: no redeliver can come in between
    purge = programs.purge_dispatched_events(store.dialect, clock.now - 7 * 86400)
    async with store._pool.acquire() as conn, conn.transaction():
        query = next(purge)
        await conn.fetch(numbered(query.sql), *query.args)  # the deliveries: gone
        during = asyncio.create_task(store.redeliver(sent.id))
        await asyncio.sleep(0.2)  # it waits for the purge's row lock
        assert not during.done()
        query = purge.send([])
        rows = await conn.fetch(numbered(query.sql), *query.args)
        with pytest.raises(StopIteration):
            purge.send([dict(row) for row in rows])
    assert await during is None  # 404: nothing said "pending" that is not there
    assert await store.list_deliveries(sent.call_id) == []


async def test_a_redelivered_delivery_is_not_shown_delivered_until_it_is_again(
    store: CallStore, clock: FakeClock
) -> None:
    """A delivered delivery redelivered was answered (and listed) `pending` beside the time
    of its earlier delivery, as if delivered: pending, it has no delivered_at until its next
    success, which gives its own time."""
    await store.create_call(dataclasses.replace(new_call(), webhook_url="https://e.com/h"))
    (sent,) = await store.claim_due_deliveries(clock.now, 20, 10)
    await store.record_delivery(sent.id, DeliveryOutcome("delivered", 204))
    (delivered,) = await store.list_deliveries(sent.call_id)
    assert (delivered.state, delivered.delivered_at) == ("delivered", clock.now)
    clock.advance(60)
    queued = await store.redeliver(sent.id)
    assert queued is not None and (queued.state, queued.delivered_at) == ("pending", None)
    assert await store.list_deliveries(sent.call_id) == [queued]
    (again,) = await store.claim_due_deliveries(clock.now, 20, 10)
    await store.record_delivery(again.id, DeliveryOutcome("delivered", 204))
    (redelivered,) = await store.list_deliveries(sent.call_id)
    assert (redelivered.state, redelivered.delivered_at) == ("delivered", clock.now)
    assert redelivered.attempts == 2


async def test_a_delivery_is_read_by_its_id_without_a_change(
    store: CallStore, clock: FakeClock
) -> None:
    """get_delivery (redeliver's 404 on a server that sends no webhooks) reads it as listed,
    changes nothing, and says None of an id that names none."""
    await store.create_call(dataclasses.replace(new_call(), webhook_url="https://e.com/h"))
    (listed,) = await store.list_deliveries(new_call().call_id)
    assert await store.get_delivery(listed.id) == listed
    assert await store.list_deliveries(listed.call_id) == [listed]
    assert await store.get_delivery(listed.id + 1) is None


async def test_a_redeliver_during_a_failing_send_starts_a_new_round(
    store: CallStore, clock: FakeClock
) -> None:
    """Redelivered while its last scheduled attempt was out: that attempt's failure, decided
    in the old round, ended the delivery `failed` (the redeliver, answered 202, got no
    attempt of its own), or its long pause overrode the redeliver's "now" (review AG)."""
    schedule = (0.0, 5.0)  # a first try and one retry
    await store.create_call(dataclasses.replace(new_call(), webhook_url="https://e.com/h"))
    (first,) = await store.claim_due_deliveries(clock.now, 20, 10)
    await store.record_delivery(first.id, next_outcome(first, 500, "boom", schedule, clock.now))
    clock.advance(6)
    (out,) = await store.claim_due_deliveries(clock.now, 20, 10)  # the last rung, in flight
    assert await store.redeliver(out.id) is not None
    await store.record_delivery(out.id, next_outcome(out, 500, "boom", schedule, clock.now))
    (after,) = await store.list_deliveries(out.call_id)  # that send was the new round's first
    assert (after.state, after.next_attempt_at) == ("pending", clock.now + 5.0)
    clock.advance(5)
    (again,) = await store.claim_due_deliveries(clock.now, 20, 10)  # its retry, the last
    assert next_outcome(again, 500, "boom", schedule, clock.now).state == "failed"


async def test_the_purge_goes_by_batches_past_what_it_keeps(
    store: CallStore, clock: FakeClock
) -> None:
    """A batch at a time (probe AQ: 406,000 old events in one transaction held the database
    11 s): every event whose deliveries are over goes, in as many batches as it takes, and a
    stopped (410) delivery of a call still live, kept, with its event, stalls none of them."""
    calls = [f"call-00000000000{n}" for n in range(5)]
    for call_id in calls:
        body = dataclasses.replace(new_call(call_id), webhook_url="https://e.com/h")
        created = await store.create_call(body)
        (sent,) = await store.claim_due_deliveries(clock.now, 20, 10)
        outcome = ("stopped", 410) if call_id == calls[0] else ("delivered", 204)
        await store.record_delivery(sent.id, DeliveryOutcome(*outcome))
        await store.ack_events([e.id for e in created.events], clock.now)
    clock.advance(8 * 86400)
    before = clock.now - 7 * 86400
    batches = []
    while batch := await store.purge_dispatched_events(before, limit=1):
        batches.append(batch)
        assert len(batches) < 20  # bounded
    assert batches == [2, 2, 2, 2]  # a delivery and an event each time: the kept one stalls none
    assert [len(await store.list_deliveries(c)) for c in calls] == [1, 0, 0, 0, 0]


@pytest.mark.parametrize(("talked", "reason"), [(27.2, "max_duration_s reached"), (20.0, None)])
async def test_a_call_cut_at_its_max_duration_says_so(
    store: CallStore, clock: FakeClock, talked: float, reason: str | None
) -> None:
    """LiveKit ends a line at its max_call_duration (from the dial, ringing included) and
    says no more than of a hang-up: an answered call that ended at its limit completes with
    the reason, one that ended before with none."""
    call = dataclasses.replace(new_call(), config={"max_duration_s": 30})
    await store.create_call(call)
    await store.start_dial(CALL)
    clock.advance(3.0)  # rings 3 s
    await store.apply(CALL, "answered", set_status(Status.IN_PROGRESS, answered=True))
    clock.advance(talked)
    await store.apply(CALL, "participant_left", lambda _s: None, callee_left=True)
    clock.advance(1.0)  # its room finishes a second later
    applied = await store.apply(CALL, "room_finished", set_status(Status.COMPLETED))
    assert applied.after is not None and applied.after.status is Status.COMPLETED
    assert applied.after.reason == reason


async def test_a_scaled_sandbox_call_is_not_said_cut_at_its_max_duration(
    store: CallStore, clock: FakeClock
) -> None:
    """SANDBOX_TIME_SCALE=5: a sandbox call that talked 10 simulated seconds of its 30 lasts
    50 s by the wall clock; it was not cut by its limit (README: no reason at another scale)."""
    setattr(store, "sandbox_time_scale", 5.0)  # noqa: B010 - as open_store sets it
    call = dataclasses.replace(new_call(), config={"max_duration_s": 30}, sandbox_instance="h:1")
    await store.create_call(call)
    await store.start_dial(CALL)
    clock.advance(15.0)  # rings 3 simulated seconds
    await store.apply(CALL, "answered", set_status(Status.IN_PROGRESS, answered=True))
    clock.advance(50.0)
    await store.apply(CALL, "participant_left", lambda _s: None, callee_left=True)
    applied = await store.apply(CALL, "room_finished", set_status(Status.COMPLETED))
    assert applied.after is not None and applied.after.status is Status.COMPLETED
    assert applied.after.reason is None


async def test_the_calls_nobody_answered_yet_are_found_by_number(store: CallStore) -> None:
    """What POST /dnc hangs up: calls to the numbers dialled and still dialling or ringing,
    oldest first; not one whose dial has not started (its dial looks at the list), an
    answered one, an ended one, one to another number, or one to a number not on the
    do-not-call list (taken off it)."""
    for call_id, phone in (
        ("call-0000000000a1", "+14155550001"),
        ("call-0000000000a2", "+14155550001"),
        ("call-0000000000a3", "+14155550001"),
        ("call-0000000000a4", "+14155550001"),
        ("call-0000000000a5", "+14155550002"),
        ("call-0000000000a6", "+14155550001"),
    ):
        await store.create_call(new_call(call_id, phone))
        if call_id != "call-0000000000a6":
            await store.start_dial(call_id)
    await store.apply("call-0000000000a2", "ringing", lambda _s: Change(Status.RINGING))
    await store.apply(
        "call-0000000000a3", "answered", lambda _s: Change(Status.IN_PROGRESS, answered=True)
    )
    await store.apply("call-0000000000a4", "failed", lambda _s: Change(Status.FAILED, "refused"))
    await store.add_dnc(["+14155550001", "+14155550002", "+14155550009"], "api")
    found = await store.unanswered_calls_to(["+14155550001", "+14155550009"])
    assert found == ["call-0000000000a1", "call-0000000000a2"]
    assert await store.remove_dnc("+14155550001")
    found = await store.unanswered_calls_to(["+14155550001", "+14155550002"])
    assert found == ["call-0000000000a5"]
    assert await store.unanswered_calls_to(["+14155550003"]) == []
