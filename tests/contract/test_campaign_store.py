"""The campaign and do-not-call part of the storage contract, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from common.calls.models import AttemptRef, DeliveryOutcome, IdempotencyClaim, NewCall
from common.calls.outcomes import CallState, Change, Status
from common.campaigns.model import (
    CampaignSpec,
    NewCampaign,
    NewRecipient,
    Pacing,
    RetryPolicy,
)
from common.campaigns.windows import CallingWindow
from common.contracts import AgentReport
from common.storage import campaign_programs as cp
from common.storage import programs
from common.storage.base import (
    AttemptWithdrawn,
    CallStore,
    DatabaseError,
    KeyTaken,
    Refused,
    UploadGivenUp,
)
from common.storage.campaign_programs import CampaignConflict, OnList
from common.storage.paging import Before
from common.storage.postgres import PostgresCallStore, numbered
from common.storage.programs import SQLITE, Dialect, Program, add_dnc
from common.storage.sql import SqlCallStore
from common.storage.sqlite import SqliteCallStore, _drive
from common.times import iso_time
from tests.contract.conftest import Backend
from tests.helpers import FakeClock, every_page

SPEC = CampaignSpec(
    defaults={"language": "en"},
    pacing=Pacing(2.0, 5),
    window=CallingWindow(),
    retry=RetryPolicy(("busy",), 2, 60.0),
)


def campaign(size: int = 3, invalid: int = 0, campaign_id: str = "cmp-1") -> NewCampaign:
    rows = [NewRecipient(i, i, f"+1415555{i:04d}", {"name": f"R{i}"}) for i in range(size)]
    rows += [
        NewRecipient(size + i, size + i, "nope", {}, "invalid", [{"field": "f", "error": "e"}])
        for i in range(invalid)
    ]
    return NewCampaign(campaign_id, "test", "client-a", SPEC, 0.0, None, rows)


def settle(status: Status) -> object:
    def decide(_state: CallState) -> Change:
        return Change(status, "test")

    return decide


async def place(store: CallStore, plan: object, call_id: str, *, dialled: bool = True) -> None:
    """What CallService.place records: the call linked to its attempt, then the dial mark."""
    assert not isinstance(plan, OnList) and plan is not None
    ref = AttemptRef(plan.campaign_id, plan.idx, plan.attempt)  # type: ignore[attr-defined]
    await store.create_call(
        NewCall(call_id, plan.phone_number, "R", "en", "Calm", campaign=ref)  # type: ignore[attr-defined]
    )
    if dialled:
        await store.start_dial(call_id)


async def end_call(store: CallStore, clock: FakeClock, call_id: str, status: Status) -> list[str]:
    await store.apply(call_id, "test", settle(status))  # type: ignore[arg-type]
    events = await store.finish_call_attempt(call_id, status.value, clock.now)
    return [e.type for e in events]


async def test_create_read_and_page(store: CallStore, clock: FakeClock) -> None:
    await store.create_campaign(campaign(5, invalid=2), clock.now)
    got = await store.get_campaign("cmp-1")
    assert got is not None
    assert got.total == 7 and got.status.value == "scheduled"
    assert got.counts == {"pending": 5, "invalid": 2}
    assert got.spec == SPEC
    first = await store.list_recipients("cmp-1", state=None, limit=4, after=None)
    rest = await store.list_recipients("cmp-1", state=None, limit=4, after=first[-1].idx)
    assert [r.idx for r in first + rest] == list(range(7))
    assert rest[-1].errors == [{"field": "f", "error": "e"}]
    assert [
        r.idx for r in await store.list_recipients("cmp-1", state="invalid", limit=9, after=None)
    ] == [5, 6]
    assert [c.campaign_id for c in await store.list_campaigns()] == ["cmp-1"]
    assert await store.get_campaign("cmp-nope") is None


async def test_one_server_drives_a_campaign_until_its_lease_runs_out(
    backend: Backend, clock: FakeClock
) -> None:
    a, b = await backend.open(), await backend.open()
    a.instance, b.instance = "a", "b"  # type: ignore[attr-defined]
    try:
        await a.create_campaign(campaign(), clock.now)
        claimed, events = await a.claim_campaigns(clock.now, 10.0, 10)
        assert [c.campaign_id for c in claimed] == ["cmp-1"]
        assert [e.type for e in events] == ["campaign.started"]
        assert events[0].data["status"] == "running"
        assert (await b.claim_campaigns(clock.now, 10.0, 10)) == ([], [])
        again, events = await a.claim_campaigns(clock.now, 10.0, 10)  # renewing: no event
        assert len(again) == 1 and events == []
        clock.advance(11)
        taken, events = await b.claim_campaigns(clock.now, 10.0, 10)
        assert [c.campaign_id for c in taken] == ["cmp-1"] and events == []
        # The old driver may not start attempts any more.
        assert await a.begin_attempt("cmp-1", 0, clock.now + 1, clock.now) is None
        assert await b.begin_attempt("cmp-1", 0, clock.now + 1, clock.now) is not None
    finally:
        await a.close()
        await b.close()


async def test_a_campaign_whose_row_is_held_a_moment_stays_its_drivers(
    backend: Backend, clock: FakeClock
) -> None:
    """The lease is renewed while one of the driver's own transactions holds the campaign's
    row (an attempt beginning or ending): on PostgreSQL the claim skipped locked rows, read
    the campaign as lost, and the server stopped its driver mid-attempt."""
    store = await backend.open()
    store.instance = "a"  # type: ignore[attr-defined]
    try:
        await store.create_campaign(campaign(), clock.now)
        assert len((await store.claim_campaigns(clock.now, 10.0, 10))[0]) == 1
        async with held_row(store, "cmp-1", 0.3):
            renewed, _ = await store.claim_campaigns(clock.now, 10.0, 10)
        assert [c.campaign_id for c in renewed] == ["cmp-1"]
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def held_row(store: CallStore, campaign_id: str, seconds: float) -> AsyncIterator[None]:
    """Another connection holds the campaign's row (PostgreSQL; SQLite: the database) for
    `seconds` from now, while the body runs."""
    started = asyncio.Event()

    async def hold() -> None:
        if isinstance(store, PostgresCallStore):
            conn = await asyncpg.connect(store.dsn)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT 1 FROM campaigns WHERE campaign_id = $1 FOR UPDATE", campaign_id
                    )
                    started.set()
                    await asyncio.sleep(seconds)
            finally:
                await conn.close()
        else:
            assert isinstance(store, SqliteCallStore)
            db = sqlite3.connect(store.path, isolation_level=None)
            try:
                db.execute("BEGIN IMMEDIATE")
                started.set()
                await asyncio.sleep(seconds)
                db.execute("COMMIT")
            finally:
                db.close()

    holder = asyncio.create_task(hold())
    await started.wait()
    try:
        yield
    finally:
        await holder


async def test_a_clock_stepped_back_after_the_start_holds_no_first_call(
    store: CallStore, clock: FakeClock
) -> None:
    """The clock steps back an hour just after a campaign started: it is claimed still, its
    recipients' first calls are due now (not when the clock reaches the start again), and a
    retry scheduled since keeps its delay."""
    await store.create_campaign(campaign(3), clock.now, start_now=True)
    clock.advance(-3600)
    claimed, _ = await store.claim_campaigns(clock.now, 10.0, 10)
    assert [c.campaign_id for c in claimed] == ["cmp-1"]
    due = (await store.due_recipients("cmp-1", clock.now, 10)).readable
    assert [r.idx for r in due] == [0, 1, 2]
    plan = await store.begin_attempt("cmp-1", 0, clock.now + 0.5, clock.now)
    await place(store, plan, "call-a")
    assert await end_call(store, clock, "call-a", Status.BUSY) == []
    clock.advance(1)
    await store.claim_campaigns(clock.now, 10.0, 10)
    assert [r.idx for r in (await store.due_recipients("cmp-1", clock.now, 10)).readable] == [1, 2]
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "pending" and row.next_at == clock.now - 1 + 60.0


async def test_a_campaign_driven_each_second_has_its_spec_parsed_once(
    store: CallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim loop reads every campaign it drives each second; its spec (written once) is
    parsed once, not at every read (HU: 70 ms of a 162 ms tick for 2,009 campaigns)."""
    parsed: list[object] = []
    real = CampaignSpec.from_json.__func__  # type: ignore[attr-defined]

    def counted(cls: type[CampaignSpec], data: dict[str, Any]) -> CampaignSpec:
        parsed.append(data)
        result: CampaignSpec = real(cls, data)
        return result

    monkeypatch.setattr(CampaignSpec, "from_json", classmethod(counted))
    spec = dataclasses.replace(campaign(1).spec, defaults={"name": f"once {id(parsed)}"})
    await store.create_campaign(dataclasses.replace(campaign(1), spec=spec), clock.now)
    for _ in range(3):
        clock.advance(1)
        claimed, _ = await store.claim_campaigns(clock.now, 10.0, 10)
        assert [c.spec.defaults for c in claimed] == [spec.defaults]
    assert len(parsed) <= 1


async def test_next_due_at_is_the_earliest_due_recipients_time(
    store: CallStore, clock: FakeClock
) -> None:
    """What an idle campaign driver waits for (HU): the earliest time a recipient still to be
    called falls due; None once none is."""
    await store.create_campaign(campaign(2), clock.now, start_now=True)
    assert await store.next_due_at("cmp-1") == clock.now
    await store.defer_recipient("cmp-1", 0, "waiting_window", clock.now + 300, clock.now)
    await store.defer_recipient("cmp-1", 1, "waiting_window", clock.now + 200, clock.now)
    assert await store.next_due_at("cmp-1") == clock.now + 200
    await store.defer_recipient("cmp-1", 1, "invalid", clock.now, clock.now + 200)
    assert await store.next_due_at("cmp-1") == clock.now + 300
    await store.defer_recipient("cmp-1", 0, "invalid", clock.now, clock.now + 300)
    assert await store.next_due_at("cmp-1") is None
    assert await store.next_due_at("cmp-none") is None


async def test_a_campaign_after_a_clock_step_back_is_claimed_by_one_server(
    store: CallStore, clock: FakeClock
) -> None:
    """Two servers claiming a running campaign whose start_at the clock stepped back before:
    on PostgreSQL the second waited for the first's claim to commit and then took the
    campaign too (its subquery had read it free), so both drove it for a tick. It reads the
    campaign another's once that claim commits (SQLite's one writer orders the two)."""
    await store.create_campaign(campaign(1), clock.now, start_now=True)
    clock.advance(-3600)
    other = uncommitted(store, lambda d: cp.claim_campaigns(d, clock.now, 10.0, "b", 10))
    async with other:
        mine = asyncio.create_task(store.claim_campaigns(clock.now, 10.0, 10))
        await asyncio.sleep(0.3)  # our claim runs while the other server's is open
        assert not mine.done()
    claimed, _ = await mine
    assert claimed == []


async def test_a_campaign_after_a_clock_step_back_paused_meanwhile_is_not_claimed(
    store: CallStore, clock: FakeClock
) -> None:
    """The same claim while another server's pause of the campaign commits: PostgreSQL
    re-checked who held the row, not that it still ran, and the paused campaign was claimed
    and driven for a tick (its dials refused). It reads the campaign paused."""
    await store.create_campaign(campaign(1), clock.now, start_now=True)
    clock.advance(-3600)
    async with pausing(store, "cmp-1", clock.now):
        mine = asyncio.create_task(store.claim_campaigns(clock.now, 10.0, 10))
        await asyncio.sleep(0.3)  # our claim runs while the other server's pause is open
        assert not mine.done()
    claimed, _ = await mine
    assert claimed == []


async def test_attempts_retries_and_completion(store: CallStore, clock: FakeClock) -> None:
    await store.create_campaign(campaign(2), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 0, clock.now + 0.5, clock.now)
    assert not isinstance(plan, OnList) and plan is not None
    assert (plan.attempt, plan.phone_number, plan.fields) == (1, "+14155550000", {"name": "R0"})
    assert await store.begin_attempt("cmp-1", 0, clock.now, clock.now) is None  # not due
    assert (await store.open_attempts("cmp-1"))[0] == 1
    await place(store, plan, "call-a")
    assert (await store.open_attempts("cmp-1")) == (1, [])  # placed, not placing
    assert await end_call(store, clock, "call-a", Status.BUSY) == []
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "pending" and row.next_at == clock.now + 60.0  # a retry, delay_s later
    assert await end_call(store, clock, "call-a", Status.BUSY) == []  # a repeat: no change
    assert await store.begin_attempt("cmp-1", 0, clock.now, clock.now) is None  # too early
    # A driver's older list deferring it to a window opening sooner: not brought forward.
    await store.defer_recipient("cmp-1", 0, "waiting_window", clock.now + 10, clock.now)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "pending" and row.next_at == clock.now + 60.0
    clock.advance(60)
    second = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert second is not None and not isinstance(second, OnList) and second.attempt == 2
    await place(store, second, "call-b")
    other = await store.begin_attempt("cmp-1", 1, clock.now, clock.now)
    await place(store, other, "call-c")
    assert await end_call(store, clock, "call-c", Status.COMPLETED) == []
    assert await end_call(store, clock, "call-b", Status.BUSY) == ["campaign.completed"]
    done = await store.get_campaign("cmp-1")
    assert done is not None and done.status.value == "completed"
    assert done.counts == {"busy": 1, "completed": 1} and done.placed == 3
    history = (await store.list_recipients("cmp-1", state="busy", limit=1, after=None))[0]
    assert [(a.attempt, a.call_id, a.status) for a in history.history] == [
        (1, "call-a", "busy"),
        (2, "call-b", "busy"),
    ]


async def test_a_recipient_livekit_will_not_dial_waits_longer_each_time(
    store: CallStore, clock: FakeClock
) -> None:
    """LiveKit down (or restarting) refused every dial: each recipient was placed again 5 s
    later, 5 times, then ended `failed`: a one-minute LiveKit outage ended the whole campaign
    `completed`, nobody called (probe BH: 60 of 60 recipients in 60 s). The waits double up
    to 10 min, 10 tries in all (about 30 min)."""
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    waits = []
    for tries in range(1, 11):
        plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
        assert plan is not None and not isinstance(plan, OnList)
        await place(store, plan, f"call-{tries:02d}", dialled=False)  # LiveKit refused it
        await end_call(store, clock, f"call-{tries:02d}", Status.FAILED)
        row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
        if tries < 10:
            assert row.state == "pending" and row.next_at is not None
            waits.append(row.next_at - clock.now)
            clock.advance(row.next_at - clock.now)
    assert waits == [5, 10, 20, 40, 80, 160, 320, 600, 600]  # 1835 s
    assert row.state == "failed"


async def test_a_call_whose_number_was_listed_before_its_dial_ends_its_recipient_dnc(
    store: CallStore, clock: FakeClock
) -> None:
    """A campaign call withdrawn before its dial because its number was put on the
    do-not-call list meanwhile ended its attempt not_dialled, counted as LiveKit refusing:
    after 9 refusals the recipient ended `failed`, not `dnc` (and before that it was shown
    pending, to be placed again only to be found listed). It ends `dnc` at once."""
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    for tries in range(1, 11):
        plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
        assert plan is not None and not isinstance(plan, OnList)
        call_id = f"call-{tries:02d}"
        await place(store, plan, call_id, dialled=False)
        if tries < 10:  # LiveKit refused it
            await end_call(store, clock, call_id, Status.FAILED)
            row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
            clock.advance(row.next_at - clock.now)
    await store.add_dnc(["+14155550000"], "api")  # while the 10th call was being placed
    listed = await store.start_dial("call-10")
    assert listed is not None and listed.dial_started_at is None
    await store.apply("call-10", cp.LISTED_BEFORE_DIAL, settle(Status.FAILED))  # type: ignore[arg-type]
    await store.finish_call_attempt("call-10", Status.FAILED.value, clock.now)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "dnc"
    assert [a.status for a in row.history] == ["not_dialled"] * 9 + ["dnc"]


async def test_a_refused_or_undialled_attempt_does_not_count(
    store: CallStore, clock: FakeClock
) -> None:
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert plan is not None and not isinstance(plan, OnList)
    await store.attempt_refused(AttemptRef("cmp-1", 0, 1), clock.now + 7, clock.now)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert (row.state, row.attempts, row.next_at, row.history) == ("pending", 0, clock.now + 7, ())
    clock.advance(7)
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    assert plan is not None and not isinstance(plan, OnList) and plan.attempt == 1
    await place(store, plan, "call-x", dialled=False)  # its server died before dialling
    await end_call(store, clock, "call-x", Status.FAILED)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "pending" and row.history[0].status == "not_dialled"
    clock.advance(10)
    for attempt, call_id in ((2, "call-y"), (3, "call-z")):  # busy twice: max_attempts is 2
        plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
        assert plan is not None and not isinstance(plan, OnList) and plan.attempt == attempt
        await place(store, plan, call_id)
        await end_call(store, clock, call_id, Status.BUSY)
        clock.advance(60)
    row = (await store.list_recipients("cmp-1", state=None, limit=1, after=None))[0]
    assert row.state == "busy"


async def test_do_not_call(store: CallStore, clock: FakeClock) -> None:
    assert await store.add_dnc(["+14155550001", "+14155550001"], "api") == 1
    assert await store.add_dnc(["+14155550001"], "agent", "call-q") == 0
    entry = await store.get_dnc("+14155550001")
    assert entry is not None and entry.source == "api"
    await store.create_campaign(campaign(2), clock.now)
    created = await store.get_campaign("cmp-1")  # listed already: dnc from the start
    assert created is not None and created.counts == {"pending": 1, "dnc": 1}
    await store.claim_campaigns(clock.now, 10.0, 10)
    assert await store.begin_attempt("cmp-1", 1, clock.now, clock.now) is None
    await store.add_dnc(["+14155550000"], "api")  # listed after: caught at its turn
    assert await store.begin_attempt("cmp-1", 0, clock.now, clock.now) == OnList(0)
    await store.remove_dnc("+14155550000")
    with pytest.raises(Refused) as refused:
        await store.create_call(NewCall("call-d", "+14155550001", "R", "en", "Calm"))
    assert refused.value.refusal.limit == "dnc"
    assert [e.number for e in await store.list_dnc()] == ["+14155550001"]
    assert await store.remove_dnc("+14155550001") is True
    assert await store.remove_dnc("+14155550001") is False
    await store.create_call(NewCall("call-d", "+14155550001", "R", "en", "Calm"))


async def test_pause_resume_cancel(store: CallStore, clock: FakeClock) -> None:
    await store.create_campaign(campaign(3), clock.now)
    paused, events = await store.control_campaign("cmp-1", "pause", clock.now)
    assert paused is not None and paused.status.value == "paused"
    assert [e.type for e in events] == ["campaign.paused"]
    with pytest.raises(CampaignConflict):
        await store.control_campaign("cmp-1", "pause", clock.now)
    assert (await store.claim_campaigns(clock.now, 10.0, 10))[0] == []  # paused: not driven
    resumed, events = await store.control_campaign("cmp-1", "resume", clock.now)
    # Never started, its start_at past: it starts as it is resumed
    assert resumed is not None and resumed.status.value == "running"
    assert [e.type for e in events] == ["campaign.started", "campaign.resumed"]
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    await place(store, plan, "call-1")
    canceled, events = await store.control_campaign("cmp-1", "cancel", clock.now)
    assert canceled is not None and canceled.status.value == "canceled"
    assert canceled.counts == {"calling": 1, "canceled": 2}
    assert await end_call(store, clock, "call-1", Status.BUSY) == []  # no retry, no event
    over = await store.get_campaign("cmp-1")
    assert over is not None and over.counts == {"busy": 1, "canceled": 2}
    with pytest.raises(CampaignConflict):
        await store.control_campaign("cmp-1", "resume", clock.now)
    assert await store.control_campaign("cmp-nope", "cancel", clock.now) == (None, [])


async def test_a_wait_counted_before_the_clock_stepped_back_counts_from_now(
    store: CallStore, clock: FakeClock
) -> None:
    """A busy recipient's retry (60 s) set just before the server's clock stepped back an
    hour was due an hour and a minute later by the stepped clock: the step delayed it. So
    was a refusal's Retry-After. Pulled back, it is due 60 s from now; a row written since
    (and one whose time is past) keeps its own."""
    await store.create_campaign(campaign(3), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    start = clock.now
    clock.advance(3600)
    busy = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    await place(store, busy, "call-0")
    refused = await store.begin_attempt("cmp-1", 1, clock.now + 1, clock.now)
    assert refused is not None and not isinstance(refused, OnList)
    ref = AttemptRef(refused.campaign_id, refused.idx, refused.attempt)
    await store.attempt_refused(ref, clock.now + 30, clock.now)
    await end_call(store, clock, "call-0", Status.BUSY)  # retried 60 s on
    clock.now = start + 10  # the clock steps back (ten seconds after the start)
    assert await store.pull_back_after_step("cmp-1", clock.now) == 2
    assert await store.pull_back_after_step("cmp-1", clock.now) == 0  # once
    due = (await store.due_recipients("cmp-1", clock.now + 30, 10)).readable
    assert sorted(r.idx for r in due) == [1, 2]  # the refused one, and one never tried
    due = (await store.due_recipients("cmp-1", clock.now + 60, 10)).readable
    assert sorted(r.idx for r in due) == [0, 1, 2]


async def test_a_paused_campaign_whose_last_calls_end_completes(
    store: CallStore, clock: FakeClock
) -> None:
    """Paused while its last recipients were being called, a campaign whose calls then all
    ended with nobody left to call stayed `paused`, every recipient final, until someone
    resumed it for nothing; its campaign.completed never came until then. README: completed
    is every recipient final. One with a retry still due stays paused."""
    await store.create_campaign(campaign(2), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    for idx in (0, 1):
        plan = await store.begin_attempt("cmp-1", idx, clock.now + idx, clock.now)
        await place(store, plan, f"call-{idx}")
    await store.control_campaign("cmp-1", "pause", clock.now)
    clock.advance(5)
    assert await end_call(store, clock, "call-0", Status.BUSY) == []  # retried: open still
    got = await store.get_campaign("cmp-1")
    assert got is not None and got.status.value == "paused"
    resumed, _ = await store.control_campaign("cmp-1", "resume", clock.now)
    assert resumed is not None and resumed.status.value == "running"
    await store.claim_campaigns(clock.now, 10.0, 10)
    clock.advance(60)
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    await place(store, plan, "call-0b")
    await store.control_campaign("cmp-1", "pause", clock.now)
    assert await end_call(store, clock, "call-1", Status.COMPLETED) == []
    assert await end_call(store, clock, "call-0b", Status.BUSY) == ["campaign.completed"]
    done = await store.get_campaign("cmp-1")
    assert done is not None and done.status.value == "completed"
    assert done.counts == {"busy": 1, "completed": 1} and done.ended_at == clock.now
    with pytest.raises(CampaignConflict):
        await store.control_campaign("cmp-1", "resume", clock.now)


@pytest.mark.parametrize("action", ["pause", "cancel"])
async def test_pause_or_cancel_takes_back_the_attempts_not_placed_yet(
    store: CallStore, clock: FakeClock, action: str
) -> None:
    """An attempt begun but whose call is not recorded (its config write waiting on a lock,
    another server placing it) is taken back: its call is then refused, so nobody is dialled
    after the 200, and its recipient is not left `calling` for good."""
    await store.create_campaign(campaign(3), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    placed = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    await place(store, placed, "call-0")
    waiting = await store.begin_attempt("cmp-1", 1, clock.now + 2, clock.now)
    assert waiting is not None and not isinstance(waiting, OnList)
    recorded = await store.begin_attempt("cmp-1", 2, clock.now + 4, clock.now)
    await place(store, recorded, "call-2", dialled=False)  # its dispatch on its way
    clock.advance(1)
    after, _ = await store.control_campaign("cmp-1", action, clock.now)
    assert after is not None
    left = "pending" if action == "pause" else "canceled"
    assert after.counts == {"calling": 2, left: 1}
    # Canceled, a call recorded but not dialled is marked to be hung up: its placing does
    # not dial it. Paused, its dial is refused, unmarked (it was dialled after the 200, BS).
    undialled = await store.get_call("call-2")
    assert undialled is not None and undialled.hangup_requested is (action == "cancel")
    if action == "pause":
        with pytest.raises(AttemptWithdrawn):
            await store.start_dial("call-2")
        undialled = await store.get_call("call-2")
        assert undialled is not None and undialled.dial_started_at is None
    dialled = await store.get_call("call-0")
    assert dialled is not None and not dialled.hangup_requested
    with pytest.raises(AttemptWithdrawn):
        await place(store, waiting, "call-1")
    assert await store.get_call("call-1") is None
    (recipient,) = await store.list_recipients("cmp-1", state=left, limit=1, after=0)
    assert recipient.idx == 1 and recipient.attempts == 0
    if action == "pause":  # resumed: due again at once, as attempt 1
        await store.control_campaign("cmp-1", "resume", clock.now)
        await store.claim_campaigns(clock.now, 10.0, 10)
        again = await store.begin_attempt("cmp-1", 1, clock.now + 2, clock.now)
        assert again is not None and not isinstance(again, OnList) and again.attempt == 1
        await place(store, again, "call-1")
    assert await end_call(store, clock, "call-0", Status.COMPLETED) == []
    assert await end_call(store, clock, "call-2", Status.CANCELED) == []


def test_spec_round_trips() -> None:
    assert CampaignSpec.from_json(SPEC.to_json()) == SPEC
    assert dataclasses.replace(SPEC, defaults={}).to_json()["defaults"] == {}


@contextlib.asynccontextmanager
async def uncommitted(
    store: CallStore, program: Callable[[Dialect], Program[Any]]
) -> AsyncIterator[None]:
    """Another server's write `program(dialect)`, its transaction run to its end but not
    committed while the body runs; committed as it ends."""
    if isinstance(store, PostgresCallStore):
        conn = await asyncpg.connect(store.dsn)
        try:
            async with conn.transaction():
                running = program(store.dialect)
                query = next(running)
                with contextlib.suppress(StopIteration):
                    while True:
                        rows: list[Any] = await conn.fetch(numbered(query.sql), *query.args)
                        query = running.send(rows)
                yield
        finally:
            await conn.close()
        return
    assert isinstance(store, SqliteCallStore)
    db = sqlite3.connect(store.path, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN IMMEDIATE")
        _drive(db, program(SQLITE))
        yield
        db.execute("COMMIT")
    finally:
        db.close()


def pausing(store: CallStore, campaign_id: str, now: float) -> Any:
    """Another server's pause of the campaign, not committed while the body runs."""
    return uncommitted(
        store, lambda d: cp.control_campaign(d, campaign_id, "pause", now, 10.0, "b")
    )


def listing(store: CallStore, number: str, now: float) -> Any:
    """Another server's POST /dnc of `number`, not committed while the body runs."""
    return uncommitted(store, lambda d: add_dnc(d, [number], "api", None, now))


async def test_a_dial_started_while_a_pause_commits_is_refused(
    store: CallStore, clock: FakeClock
) -> None:
    """A call's dial marked while a pause's transaction was committing: on PostgreSQL the
    dial's check read the campaign as it was before the pause (running) and the number was
    dialled after the pause's 200. The check waits for the pause, reads it paused, and the
    dial is refused (SQLite's one writer orders the two already)."""
    await store.create_campaign(campaign(1), clock.now)
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 0, clock.now, clock.now)
    await place(store, plan, "call-0", dialled=False)  # recorded, its dispatch on its way
    async with pausing(store, "cmp-1", clock.now):
        dial = asyncio.create_task(store.start_dial("call-0"))
        await asyncio.sleep(0.3)  # the dial's transaction runs while the pause's is open
        assert not dial.done()
    with pytest.raises(AttemptWithdrawn):
        await dial
    call = await store.get_call("call-0")
    assert call is not None and call.dial_started_at is None
    shown = await store.get_campaign("cmp-1")
    assert shown is not None and shown.status.value == "paused"


async def test_a_dial_started_while_its_number_is_being_listed_is_not_marked(
    store: CallStore, clock: FakeClock
) -> None:
    """A call's dial marked while a POST /dnc of its number was committing: on PostgreSQL
    the dial's check did not see the number (not committed yet), the dial was marked, and
    the number was dialled after the /dnc's 200. The check waits for the listing and finds
    the number (SQLite's one writer orders the two already)."""
    await store.create_call(NewCall("call-1", "+14155550123", "R", "en", "Calm"))
    async with listing(store, "+14155550123", clock.now):
        dial = asyncio.create_task(store.start_dial("call-1"))
        await asyncio.sleep(0.3)  # the dial's transaction runs while the listing's is open
        assert not dial.done()
    listed = await dial
    assert listed is not None and listed.dial_started_at is None


async def test_a_dial_started_while_an_agent_lists_its_number_is_not_marked(
    store: CallStore, clock: FakeClock
) -> None:
    """A callee asked not to be called again (the agent's do_not_call report) while another
    call to the same number was starting its dial: on PostgreSQL the dial's check did not
    see the agent's listing (not committed yet) and the number was dialled after the
    report's 200, as it was for POST /dnc. The dial waits for the report and finds it."""
    number = "+14155550123"
    await store.create_call(NewCall("call-1", number, "R", "en", "Calm"))
    await store.create_call(NewCall("call-2", number, "R", "en", "Calm"))
    asked = AgentReport(call_id="call-1", seq=0, kind="do_not_call", at=clock.now)
    reporting = uncommitted(
        store, lambda d: programs.record_reports(d, [asked], clock.now, 10.0, "b")
    )
    async with reporting:
        dial = asyncio.create_task(store.start_dial("call-2"))
        await asyncio.sleep(0.3)  # the dial's transaction runs while the report's is open
        assert not dial.done()
    listed = await dial
    assert listed is not None and listed.dial_started_at is None


@pytest.mark.parametrize("enforce", [True, False])
async def test_a_campaign_events_estimate_counts_the_calling_hours_as_the_server_does(
    store: CallStore, clock: FakeClock, enforce: bool
) -> None:
    """A campaign's events show it as GET /campaigns/{id} does: its estimated finish counts
    the 08:00-21:00 floor as CAMPAIGN_ENFORCE_CALLING_HOURS says (1,000 calls at 0.01/s,
    07:00-22:00 in Los Angeles: 15 open hours a day without the floor, 13 with it)."""
    store.enforce_calling_hours = enforce  # type: ignore[attr-defined]
    spec = dataclasses.replace(
        SPEC, pacing=Pacing(0.01, 5), window=CallingWindow(time(7), time(22))
    )
    await store.create_campaign(dataclasses.replace(campaign(1000), spec=spec), clock.now)
    _, events = await store.claim_campaigns(clock.now, 10.0, 10)
    shown = await store.get_campaign("cmp-1")
    assert shown is not None
    floor, no_floor = (
        shown.estimated_finish_at(clock.now),
        shown.estimated_finish_at(clock.now, False),
    )
    assert floor is not None and no_floor is not None and floor > no_floor
    expected = iso_time(floor if enforce else no_floor)
    assert [e.data["estimated_finish_at"] for e in events] == [expected]


async def test_paging_campaigns_created_in_one_instant_skips_none(
    store: CallStore, clock: FakeClock
) -> None:
    ids = [f"cmp-{n}" for n in range(5)]
    for call_id in ids:
        await store.create_campaign(campaign(1, campaign_id=call_id), clock.now)  # one instant
    seen = await every_page(
        lambda before: store.list_campaigns(limit=2, before=before),
        lambda campaign: Before.after(campaign.created_at, campaign.campaign_id),
        limit=2,
    )
    assert [c.campaign_id for c in seen] == ids[::-1]


async def test_the_purge_keeps_the_410_that_stops_an_open_campaigns_events(
    store: CallStore, clock: FakeClock
) -> None:
    """A 410 Gone is remembered by its stopped delivery; the retention purge deleted it 7
    days on, and a campaign resumed after a week's pause sent its next event to the URL
    that wants no more (review AG). Once the campaign is over, the purge takes it."""
    url = "https://e.com/hooks"
    await store.create_campaign(dataclasses.replace(campaign(1), webhook_url=url), clock.now)
    _, events = await store.claim_campaigns(clock.now, 30, 10)  # campaign.started
    (first,) = await store.claim_due_deliveries(clock.now, 20, 10)
    await store.record_delivery(first.id, DeliveryOutcome("stopped", 410), clock.now)
    await store.ack_events([e.id for e in events], clock.now)
    _, paused = await store.control_campaign("cmp-1", "pause", clock.now)
    await store.ack_events([e.id for e in paused], clock.now)
    clock.advance(8 * 86400)
    await store.purge_dispatched_events(clock.now - 7 * 86400)
    _, resumed = await store.control_campaign("cmp-1", "resume", clock.now)
    assert resumed
    states = [(d.event_type, d.state) for d in await store.list_deliveries("cmp-1")]
    assert ("campaign.resumed", "stopped") in states
    assert all(state == "stopped" for _, state in states), states
    _, canceled = await store.control_campaign("cmp-1", "cancel", clock.now)
    await store.ack_events([e.id for e in (*resumed, *canceled)], clock.now)
    clock.advance(8 * 86400)
    await store.purge_dispatched_events(clock.now - 7 * 86400)
    assert await store.list_deliveries("cmp-1") == []


async def staged(store: CallStore, campaign_id: str) -> int:
    """Recipient rows stored under `campaign_id` (whether or not its campaign exists)."""
    return len(await store.list_recipients(campaign_id, state=None, limit=10_000, after=None))


async def test_recipients_go_in_batches_under_a_campaign_nobody_sees_until_the_last(
    store: CallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large list is stored STAGE_ROWS a transaction (one of 100,000 rows held SQLite's one
    thread ~2 s); a creation that fails half-way shows nothing, and the reaper's discard
    removes what it stored."""
    monkeypatch.setattr(cp, "STAGE_ROWS", 2)
    real_stage = cp.stage_recipients
    batches: list[int] = []

    def stage(*args: object, **kwargs: object) -> object:
        first = args[2]
        assert isinstance(first, int)
        batches.append(first)
        if first == 4 and args[1].campaign_id == "cmp-broken":  # type: ignore[attr-defined]
            raise DatabaseError("disk full")
        return real_stage(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cp, "stage_recipients", stage)
    await store.create_campaign(campaign(5, invalid=2), clock.now)
    assert batches == [0, 2, 4, 6]
    got = await store.get_campaign("cmp-1")
    assert got is not None and got.total == 7
    assert got.counts == {"pending": 5, "invalid": 2}

    batches.clear()
    with pytest.raises(DatabaseError):
        await store.create_campaign(campaign(7, campaign_id="cmp-broken"), clock.now)
    assert batches == [0, 2, 4]
    assert await staged(store, "cmp-broken") == 4  # two batches stored, unseen:
    assert await store.get_campaign("cmp-broken") is None
    assert [c.campaign_id for c in await store.list_campaigns()] == ["cmp-1"]
    claimed, _ = await store.claim_campaigns(clock.now, 10.0, 10)
    assert [c.campaign_id for c in claimed] == ["cmp-1"]
    # Removed by batches, the given-up mark last; a live campaign's rows are never touched.
    before = clock.now - cp.UPLOAD_GIVEN_UP_S
    assert await store.discard_given_up_upload(before, 3) == 3
    assert await store.discard_given_up_upload(before, 3) == 1
    assert await store.discard_given_up_upload(before, 3) == 0
    assert await staged(store, "cmp-broken") == 0
    assert await staged(store, "cmp-1") == 7


async def test_a_key_taken_while_its_rows_were_stored_leaves_nothing(
    store: CallStore, clock: FakeClock
) -> None:
    claim = IdempotencyClaim("client-a", "key-1", "h1")
    await store.create_campaign(campaign(3), clock.now, claim, {"invalid_rows": []})
    with pytest.raises(KeyTaken) as taken:  # a retry sent at the same moment
        await store.create_campaign(campaign(3, campaign_id="cmp-2"), clock.now, claim, {})
    assert taken.value.stored.call_id == "cmp-1"
    assert await store.get_campaign("cmp-2") is None
    assert await store.discard_given_up_upload(clock.now - cp.UPLOAD_GIVEN_UP_S, 100) == 3
    assert await staged(store, "cmp-2") == 0
    assert await staged(store, "cmp-1") == 3


async def test_an_upload_its_server_left_is_given_up_after_its_bound(
    store: CallStore, clock: FakeClock
) -> None:
    """A server stopped mid-upload never marks it: untouched for UPLOAD_GIVEN_UP_S, it is
    removed; the creation it was, were it to go on, is refused (503), never half a list."""
    new = campaign(3, campaign_id="cmp-left")
    dialect = store.dialect  # type: ignore[attr-defined]
    first = cp.stage_recipients(
        dialect, new, 0, clock.now, clock.now, live_after=clock.now - cp.UPLOAD_GIVEN_UP_S
    )
    await store._run(first, write=True)  # type: ignore[attr-defined]
    assert await store.discard_given_up_upload(clock.now - cp.UPLOAD_GIVEN_UP_S, 100) == 0
    clock.advance(cp.UPLOAD_GIVEN_UP_S + 1)
    last = cp.create_campaign(dialect, new, clock.now, live_after=clock.now - cp.UPLOAD_GIVEN_UP_S)
    with pytest.raises(UploadGivenUp):
        await store._run(last, write=True)  # type: ignore[attr-defined]
    assert await staged(store, "cmp-left") == 3
    assert await store.discard_given_up_upload(clock.now - cp.UPLOAD_GIVEN_UP_S, 100) == 3
    assert await store.get_campaign("cmp-left") is None and await staged(store, "cmp-left") == 0


async def test_a_page_of_one_state_reads_its_own_attempts_only(tmp_path: Path) -> None:
    """GET /campaigns/{id}/recipients?status=invalid read every attempt between the page's
    first and last recipient: ten rows across a list of 100,000 read 300,000 attempts, 3.3 s
    of SQLite's one thread while every other request waited. It reads the page's own."""
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await store.create_campaign(campaign(1000), 1.0)
    finally:
        await store.close()
    db = sqlite3.connect(tmp_path / "calls.db")
    db.row_factory = sqlite3.Row
    db.executemany(
        "INSERT INTO campaign_attempts (campaign_id, idx, attempt, state, created_at)"
        " VALUES ('cmp-1', ?, ?, 'ended', 1.0)",
        [(idx, attempt) for idx in range(1000) for attempt in (1, 2, 3)],
    )
    db.execute("UPDATE campaign_recipients SET state = 'invalid' WHERE idx IN (0, 999)")
    read: list[int] = []

    class Counting:
        def execute(self, sql: str, args: tuple[Any, ...]) -> Any:
            rows = db.execute(sql, args).fetchall()
            read.append(len(rows))
            return _Fetched(rows)

    page = _drive(Counting(), cp.list_recipients(SQLITE, "cmp-1", "invalid", 100, None))  # type: ignore[arg-type]
    assert [(r.idx, len(r.history)) for r in page] == [(0, 3), (999, 3)]
    assert read == [2, 6]
    db.close()


@dataclasses.dataclass
class _Fetched:
    rows: list[Any]

    def fetchall(self) -> list[Any]:
        return self.rows


async def test_an_erasure_on_request_erases_recipients_and_a_waiting_one_is_never_called(
    store: CallStore, clock: FakeClock
) -> None:
    """A recipient's row kept the name and CSV columns of a person erased, and one waiting
    was still called. Erased by number: its fields go (the number stays, as on calls), one
    waiting ends `erased` (due no more); one being called is live: nothing is erased. Erased
    by call: the recipient its attempt called."""
    rows = [
        NewRecipient(0, 1, "+14155550100", {"name": "Ann Lee", "notes": "cricket coach"}),
        NewRecipient(1, 2, "+14155550101", {"name": "Bob Ray"}),
        NewRecipient(2, 3, "+14155550102", {"name": "Cy Ode"}),
    ]
    await store.create_campaign(
        NewCampaign("cmp-1", "test", "client-a", SPEC, 0.0, None, rows), clock.now, start_now=True
    )
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 1, clock.now + 0.5, clock.now)
    await place(store, plan, "call-b")
    refused = await store.erase_calls_now(numbers=["+14155550101"])
    assert refused.live == ("call-b",) and refused.recipients == 0

    erasure = await store.erase_calls_now(numbers=["+14155550100"])

    assert (erasure.erased, erasure.recipients) == ((), 1)
    assert erasure.erased_at == clock.now
    got = await store.list_recipients("cmp-1", state=None, limit=10, after=None)
    assert [(r.phone_number, r.state, r.fields) for r in got] == [
        ("+14155550100", "erased", {}),
        ("+14155550101", "calling", {"name": "Bob Ray"}),
        ("+14155550102", "pending", {"name": "Cy Ode"}),
    ]
    assert [r.idx for r in (await store.due_recipients("cmp-1", clock.now, 10)).readable] == [2]
    assert await store.begin_attempt("cmp-1", 0, clock.now + 1, clock.now) is None
    campaign_row = await store.get_campaign("cmp-1")
    assert campaign_row is not None and campaign_row.counts["erased"] == 1
    # By call, once it has ended (a busy one, waiting for its retry: never called again).
    await end_call(store, clock, "call-b", Status.BUSY)
    erased = await store.erase_calls_now(call_id="call-b")
    assert (erased.erased, erased.recipients) == (("call-b",), 1)
    got = await store.list_recipients("cmp-1", state=None, limit=10, after=None)
    assert (got[1].state, got[1].fields) == ("erased", {})


async def test_an_erasure_erases_what_a_refused_rows_errors_quoted_of_it(
    store: CallStore, clock: FakeClock
) -> None:
    """A row refused (kept, invalid_rows=skip) kept its errors, which may quote its values
    ("unsupported language 'Ann Lee'"), in its recipient row and in the campaign's
    Idempotency-Key answer its retries replay: an erasure of its number left both. Their texts
    go (which field was wrong stays); another row's stay."""
    quoted = [{"field": "language", "error": "unsupported language 'Ann Lee'; allowed: en"}]
    other = [{"field": "language", "error": "unsupported language 'Bob Ray'; allowed: en"}]
    rows = [
        NewRecipient(0, 2, "+14155550100", {}, "invalid", quoted),
        NewRecipient(1, 3, "+14155550101", {}, "invalid", other),
        NewRecipient(2, 4, "+14155550102", {"name": "Cy Ode"}),
    ]
    claim = IdempotencyClaim("client-a", "key-1", "h1")
    answer = {
        "invalid_row_count": 2,
        "invalid_rows": [{"row": 2, **quoted[0]}, {"row": 3, **other[0]}],
    }
    new = NewCampaign("cmp-1", "test", "client-a", SPEC, 0.0, None, rows)
    await store.create_campaign(new, clock.now, claim, answer)

    erasure = await store.erase_calls_now(numbers=["+14155550100"])

    assert erasure.recipients == 1
    got = await store.list_recipients("cmp-1", state=None, limit=10, after=None)
    assert [r.errors for r in got] == [
        [{"field": "language", "error": cp.ERASED_ERROR}],
        other,
        None,
    ]
    stored = await store.get_idempotent("client-a", "key-1")
    assert stored is not None and stored.body == {
        "invalid_row_count": 2,
        "invalid_rows": [
            {"row": 2, "field": "language", "error": cp.ERASED_ERROR},
            {"row": 3, **other[0]},
        ],
    }
    assert "Ann Lee" not in repr(stored.body)


async def test_an_erasure_just_after_a_campaign_call_ended_is_not_refused_as_live(
    store: CallStore, clock: FakeClock
) -> None:
    """A campaign call ended, its campaign not yet told (its call.ended event, a moment
    later): its recipient is still `calling`, and an erasure called the ended call "still
    live". It is told apart (`ending`), nothing erased; once the end is recorded, it goes."""
    rows = [NewRecipient(0, 1, "+14155550100", {"name": "Ann Lee"})]
    await store.create_campaign(
        NewCampaign("cmp-1", "test", "client-a", SPEC, 0.0, None, rows), clock.now, start_now=True
    )
    await store.claim_campaigns(clock.now, 10.0, 10)
    plan = await store.begin_attempt("cmp-1", 0, clock.now + 0.5, clock.now)
    await place(store, plan, "call-a")
    await store.apply("call-a", "test", settle(Status.COMPLETED))  # type: ignore[arg-type]

    for asked in ({"call_id": "call-a"}, {"numbers": ["+14155550100"]}):
        erasure = await store.erase_calls_now(**asked)
        assert (erasure.live, erasure.ending, erasure.erased) == ((), ("call-a",), ())

    await store.finish_call_attempt("call-a", "completed", clock.now)
    erasure = await store.erase_calls_now(call_id="call-a")
    assert (erasure.live, erasure.ending, erasure.erased) == ((), (), ("call-a",))
    assert erasure.recipients == 1


async def test_an_erasure_finds_a_numbers_recipients_aside_from_the_writes(
    store: CallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recipients have no index by number: finding a number's read every recipient, inside
    the erasure's write transaction, and every write waited for it (SQLite, 300,000
    recipients: a call's intake waited 77 ms; 1.5 ms now). The search is a read aside; the
    write takes the recipients it found by their keys."""
    await store.create_campaign(campaign(3), clock.now)
    assert isinstance(store, SqlCallStore)
    aside, read_aside = list[str](), store._read_aside

    async def recorded(program: Any) -> Any:
        aside.append(getattr(program, "__name__", ""))
        return await read_aside(program)

    monkeypatch.setattr(store, "_read_aside", recorded)

    erasure = await store.erase_calls_now(numbers=["+14155550001"])

    assert erasure.recipients == 1 and "recipients_to_erase" in aside


async def test_a_database_from_before_the_recipients_number_index_upgrades_in_place(
    backend: Backend, clock: FakeClock
) -> None:
    """A database of the release before campaign_recipients_phone (SQLite schema 22,
    PostgreSQL 16), with a campaign in it: the upgrade adds the index and keeps the
    recipients, which an erasure of a number then finds."""
    store = await backend.open()
    await store.create_campaign(campaign(3), clock.now)
    undo = "DROP INDEX campaign_recipients_phone;"
    if isinstance(store, PostgresCallStore):
        conn = await asyncpg.connect(store.dsn)
        try:
            await conn.execute(undo)
            await conn.execute("DELETE FROM schema_migrations WHERE version >= 17")
        finally:
            await conn.close()
    else:
        assert isinstance(store, SqliteCallStore)
        with contextlib.closing(sqlite3.connect(store.path)) as db, db:
            db.executescript(
                f"{undo} DROP INDEX deliveries_due_heads; DROP INDEX deliveries_claimed;"  # 0024
                f" ALTER TABLE deliveries DROP COLUMN behind;"
                " ALTER TABLE outbox DROP COLUMN takeovers;"  # 0025
                " ALTER TABLE outbox DROP COLUMN given_up_at; PRAGMA user_version = 22;"
            )
    await store.close()
    store = await backend.open()
    try:
        if isinstance(store, PostgresCallStore):
            conn = await asyncpg.connect(store.dsn)
            try:
                found = await conn.fetchval(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = 'campaign_recipients_phone'"
                )
                version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
            finally:
                await conn.close()
        else:
            assert isinstance(store, SqliteCallStore)
            with contextlib.closing(sqlite3.connect(store.path)) as db, db:
                found = db.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'campaign_recipients_phone'"
                ).fetchone()[0]
                version = db.execute("PRAGMA user_version").fetchone()[0]
        assert (found, version) == (1, 19 if isinstance(store, PostgresCallStore) else 25)
        erasure = await store.erase_calls_now(numbers=["+14155550001"])
        assert erasure.recipients == 1
    finally:
        await store.close()


async def cancel_racing(
    dsn: str, store: SqlCallStore, other: Callable[[], Awaitable[Any]]
) -> tuple[Any, Any]:
    """A cancel of cmp-1 waiting for its campaign's row (held a moment by another session),
    `other` begun meanwhile, then the row let go: what each came to (or raised)."""
    conn = await asyncpg.connect(dsn)
    try:
        holding = conn.transaction()
        await holding.start()
        await conn.execute("SELECT 1 FROM campaigns WHERE campaign_id = 'cmp-1' FOR UPDATE")
        canceling = asyncio.ensure_future(store.control_campaign("cmp-1", "cancel"))
        await asyncio.sleep(0.3)  # waiting for the campaign's row
        racing = asyncio.ensure_future(other())
        await asyncio.sleep(0.3)
        await holding.commit()
    finally:
        await conn.close()
    answers = await asyncio.gather(canceling, racing, return_exceptions=True)
    return answers[0], answers[1]


async def test_a_cancel_and_a_dial_at_once_do_not_deadlock(
    postgres_dsn: str, clock: FakeClock
) -> None:
    """PostgreSQL: a dial (begin_attempt) locked its recipient, then its campaign; a cancel
    its campaign, then its waiting recipients. A cancel waiting for the campaign's row (held
    a moment by another write) and a dial of one of its recipients meanwhile: the cancel took
    the campaign and waited for the recipient, the dial held the recipient and waited for the
    campaign, and PostgreSQL broke the deadlock with an error (the cancel's request a 503, or
    the dial's tick lost). The dial now locks the campaign first: it waits, then finds the
    recipient canceled and places nothing."""
    store = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=6)
    try:
        await store.create_campaign(campaign(3), clock.now, start_now=True)
        await store.claim_campaigns(clock.now, 10.0, 10)
        canceled, dialled = await cancel_racing(
            postgres_dsn, store, lambda: store.begin_attempt("cmp-1", 0, clock.now + 1, clock.now)
        )
        assert not isinstance(canceled, BaseException), canceled
        assert not isinstance(dialled, BaseException), dialled
        assert dialled is None and canceled[0] is not None
        assert canceled[0].counts == {"canceled": 3}
    finally:
        await store.close()
