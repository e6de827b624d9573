"""The CallStore contract for agent reports, the same on every backend (tests/contract/
conftest.py picks them): how many turns a call keeps, what the retention erases, and calls
whose stored reports no longer read under today's rules."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Generator
from typing import Any, cast

import pytest

from common.calls.errors import TooManyTurns
from common.calls.models import Applied, NewCall
from common.calls.outcomes import Change, Status
from common.contracts import MAX_TURNS, AgentReport, AmdVerdict, CallReport, TranscriptTurn
from common.repeats import Repeats
from common.storage import programs
from common.storage.base import CallStore
from common.storage.postgres import PostgresCallStore, numbered
from common.storage.programs import Query, Row
from common.storage.sql import SqlCallStore
from tests.helpers import FakeClock

CALL = "call-00000000000a"
HELLO = TranscriptTurn(role="agent", text="Hello Ann", at_s=0.5)


async def execute(store: CallStore, sql: str, *args: Any) -> list[Row]:
    """Raw SQL on the store's own database (as a database written by an older server holds)."""

    def program() -> Generator[Query, list[Row], list[Row]]:
        rows = yield Query(sql, args)
        return rows

    return await cast(SqlCallStore, store)._run(program(), write=True)


def sent(seq: int, kind: str, at: float = 1_700_000_001.0, **body: Any) -> AgentReport:
    return AgentReport(call_id=CALL, seq=seq, kind=kind, at=at, **body)  # type: ignore[arg-type]


async def record_report(store: CallStore, report: AgentReport) -> Applied:
    """One report on its own, as POST /agent/reports takes one: a turn beyond the call's
    MAX_TURNS raises TooManyTurns, as the handler answers 409."""
    [applied] = await store.record_reports([report])
    if applied.too_many_turns:
        raise TooManyTurns(report.call_id, MAX_TURNS)
    return applied


async def kinds_stored(store: CallStore) -> list[str]:
    rows = await execute(store, "SELECT kind FROM reports WHERE call_id = ? ORDER BY seq", CALL)
    return [str(r["kind"]) for r in rows]


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The unreadable-row warnings, none said yet (they are said once a minute per kind)."""
    monkeypatch.setattr(programs, "_UNREADABLE", Repeats())


async def test_an_answer_and_a_machine_verdict_after_the_room_finished_are_voicemail(
    store: CallStore,
) -> None:
    """Reports that queued during a database outage came after room_finished, together: the
    answer settled the call `completed` before its `machine-vm` verdict was read (probe AJ:
    5 of 24 voicemail calls)."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await store.apply(CALL, "room_finished", lambda _s: None, room_finished=True)
    verdict = AmdVerdict(category="machine-vm", reason="a beep")
    answered, amd = await store.record_reports([sent(1, "answered"), sent(2, "amd", amd=verdict)])
    assert answered.change == Change(Status.VOICEMAIL, "machine-vm", answered=True)
    assert amd.change is None and not amd.duplicate
    call = await store.get_call(CALL)
    assert call is not None and (call.status, call.amd) == (Status.VOICEMAIL, "machine-vm")
    kinds = [e.kind for e in call.timeline if e.kind.startswith("agent_")]
    assert kinds == ["agent_answered", "agent_amd"]  # in the order reported


async def test_a_verdict_after_the_final_report_counts_for_nothing_in_a_batch_too(
    store: CallStore,
) -> None:
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await store.apply(CALL, "room_finished", lambda _s: None, room_finished=True)
    verdict = AmdVerdict(category="machine-vm", reason="a beep")
    final = CallReport(transcript=[HELLO])
    answered, _final, amd = await store.record_reports(
        [sent(1, "answered"), sent(2, "final", final=final), sent(3, "amd", amd=verdict)]
    )
    assert answered.change is not None and answered.change.status is Status.COMPLETED
    assert amd.duplicate
    call = await store.get_call(CALL)
    assert call is not None and (call.status, call.amd) == (Status.COMPLETED, None)


async def test_a_verdict_after_a_final_report_posted_earlier_counts_for_nothing(
    store: CallStore,
) -> None:
    """Review AN: the batch's verdict decided the answer though it was then refused."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await store.apply(CALL, "room_finished", lambda _s: None, room_finished=True)
    await store.record_reports([sent(1, "final", final=CallReport(transcript=[HELLO]))])
    verdict = AmdVerdict(category="machine-vm", reason="a beep")
    answered, amd = await store.record_reports([sent(2, "answered"), sent(3, "amd", amd=verdict)])
    assert answered.change is not None and answered.change.status is Status.COMPLETED
    assert amd.duplicate


async def test_a_turn_after_the_final_report_is_a_duplicate_and_not_kept(
    store: CallStore,
) -> None:
    """The final report's transcript is the one shown: a turn after it was answered
    "applied" and stored, and never shown (the answer it got said otherwise)."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await store.apply(CALL, "room_finished", lambda _s: None, room_finished=True)
    late = TranscriptTurn(role="callee", text="one more thing", at_s=9.0)
    _final, in_batch = await store.record_reports(
        [sent(1, "final", final=CallReport(transcript=[HELLO])), sent(2, "turn", turn=late)]
    )
    assert in_batch.duplicate
    assert (await record_report(store, sent(3, "turn", turn=late))).duplicate
    assert await kinds_stored(store) == ["final"]
    call = await store.get_call(CALL)
    assert call is not None and call.report is not None
    assert [t.text for t in call.report.transcript] == ["Hello Ann"]


# ------------------------------------------------------------------ rows written before today


async def test_a_resumed_jobs_reports_under_numbers_already_held_are_kept_after_the_last(
    store: CallStore,
) -> None:
    """A job LiveKit resumed on another worker numbers its reports from 0 again: a report
    whose number another holds is kept after the call's last (its final report too), unless
    it is the same report again or a second answer; sent again, it is a duplicate."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    first = [sent(0, "answered"), sent(1, "turn", turn=HELLO), sent(2, "turn", turn=HELLO)]
    assert not any(a.duplicate for a in await store.record_reports(first))
    again = TranscriptTurn(role="agent", text="Sorry, the line dropped", at_s=0.1)
    final = CallReport(transcript=[again], summary="Asked again")
    resumed = [
        sent(0, "answered", at=1_700_000_090.0),
        sent(1, "turn", at=1_700_000_090.5, turn=again),
        sent(2, "final", at=1_700_000_091.0, final=final),
    ]
    applied = await store.record_reports(resumed)
    assert [a.duplicate for a in applied] == [True, False, False]
    assert [a.duplicate for a in await store.record_reports(resumed)] == [True, True, True]
    assert await kinds_stored(store) == ["answered", "turn", "turn", "turn", "final"]
    call = await store.get_call(CALL)
    assert call is not None and call.report is not None and call.report.summary == "Asked again"


async def test_a_report_a_call_has_one_of_is_kept_once_under_any_number(
    store: CallStore,
) -> None:
    """An answer and a machine verdict are kept once: sent again under a new number (no
    number taken: its insert is what checks), or under a number another report holds."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    verdict = AmdVerdict(category="human")
    first = [sent(0, "answered"), sent(1, "amd", amd=verdict), sent(2, "turn", turn=HELLO)]
    assert not any(a.duplicate for a in await store.record_reports(first))
    again = [
        sent(7, "answered"),
        sent(8, "amd", amd=AmdVerdict(category="machine-vm")),
        sent(2, "answered", at=1_700_000_090.0),
    ]
    assert [a.duplicate for a in await store.record_reports(again)] == [True, True, True]
    assert await kinds_stored(store) == ["answered", "amd", "turn"]
    call = await store.get_call(CALL)
    assert call is not None and call.amd == "human"


async def test_a_report_sent_again_read_on_another_clock_reading_is_a_duplicate(
    store: CallStore,
) -> None:
    """The server reads a report's `at` on its own clock by each send's token (`behind`),
    which differs from send to send: sent again, it is the same report, kept once; its
    `at` column is on the server's clock."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    turn = sent(1, "turn", turn=HELLO)
    [first] = await store.record_reports([turn], -9.7)
    [again] = await store.record_reports([turn], -9.4)
    assert (first.duplicate, again.duplicate) == (False, True)
    rows = await execute(store, "SELECT at FROM reports WHERE call_id = ?", CALL)
    assert [r["at"] for r in rows] == [pytest.approx(turn.at - 9.7)]


async def test_stored_reports_that_no_longer_read_leave_the_call_readable(
    store: CallStore, caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await record_report(store, sent(1, "turn", turn=HELLO))
    # A turn whose `at` was Infinity (pydantic wrote null), and one whose turn is broken.
    at_null = dict(json.loads(sent(2, "turn", turn=HELLO).to_json()), at=None)
    broken = json.loads(sent(3, "turn", turn=HELLO).to_json())
    broken["turn"]["at_s"] = None
    for seq, body in ((2, at_null), (3, broken)):
        await execute(
            store,
            "INSERT INTO reports (call_id, seq, kind, body, at, received_at)"
            " VALUES (?, ?, 'turn', ?, 0, 0)",
            CALL,
            seq,
            json.dumps(body),
        )
    with caplog.at_level(logging.WARNING, logger="common.storage.programs"):
        call = await store.get_call(CALL)
    assert call is not None and call.transcript == (HELLO, HELLO)
    assert any(CALL in r.getMessage() and "#3" in r.getMessage() for r in caplog.records)


async def test_a_stored_final_report_that_no_longer_reads_shows_what_does(
    store: CallStore, clock: FakeClock, caplog: pytest.LogCaptureFixture, fresh_warnings: None
) -> None:
    """A usage nested 200 levels was stored once (writing it worked; reading it back made
    every GET of the call a 500). Its other fields still show, and the retention erases it."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    deep: Any = 1
    for _ in range(200):
        deep = {"a": deep}
    final = CallReport(transcript=[HELLO], summary="Greeted Ann.").model_dump(mode="json")
    await execute(
        store,
        "UPDATE calls SET report = ?, report_at = ? WHERE call_id = ?",
        json.dumps(dict(final, usage=deep)),
        clock.now,
        CALL,
    )
    with caplog.at_level(logging.WARNING, logger="common.storage.programs"):
        call = await store.get_call(CALL)
        listed = await store.list_calls()
    assert call is not None and call.report is not None
    assert call.report.summary == "Greeted Ann." and call.transcript == (HELLO,)
    assert call.report.usage == {}
    assert [c.call_id for c in listed] == [CALL]  # lists read no report
    assert any(CALL in r.getMessage() and "usage" in r.getMessage() for r in caplog.records)
    await execute(store, "UPDATE calls SET ended_at = ? WHERE call_id = ?", clock.now, CALL)
    assert await store.erase_call_data(clock.now + 1, 10) == 1
    erased = await store.get_call(CALL)
    assert erased is not None and erased.report is not None
    assert erased.transcript == () and erased.report.summary is None


# ------------------------------------------------------------------ turns per call


async def test_lists_read_no_final_report_and_no_config(store: CallStore) -> None:
    """GET /calls shows neither; reading and validating each listed call's transcript (up to
    megabytes) held the database thread, every write waiting, ~1 s for 500 such calls."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm", config={"a": 1}))
    await record_report(store, sent(1, "final", final=CallReport(transcript=[HELLO])))
    call = await store.get_call(CALL, with_timeline=False)
    assert call is not None and call.report is not None and call.config == {"a": 1}
    [listed] = await store.list_calls()
    assert listed == dataclasses.replace(call, report=None, config=None, turns=())


async def test_a_call_keeps_at_most_max_turns(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's limit at 200 turns (programs.MAX_TURNS, read at each turn): at 2,000 the
    test sent ten times the reports for the same claim, each turn counting the call's turns
    before it (2.3 s of CPU on PostgreSQL, now 0.3 s)."""
    limit = 200
    monkeypatch.setattr(programs, "MAX_TURNS", limit)
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    said = [TranscriptTurn(role="callee", text=f"turn {i}", at_s=float(i)) for i in range(3)]
    results: list[object] = []
    # 100 at once (on PostgreSQL, on many connections), the last 100 across the limit: all
    # 2005 at once, each waiting on the call's row, had some wait over the pool's 10 s for a
    # connection on a loaded machine (DatabaseError, neither applied nor refused)
    bounds = [0, *range(5, limit + 5, 100), limit + 5]  # the last: 105..204
    for first, end in zip(bounds, bounds[1:], strict=False):
        results += await asyncio.gather(
            *(
                record_report(store, sent(seq, "turn", turn=said[seq % 3]))
                for seq in range(first, end)
            ),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, TooManyTurns)]
    assert len(refused) == 5 and all(isinstance(r, Applied) for r in results if r not in refused)
    with pytest.raises(TooManyTurns):
        await record_report(store, sent(limit + 5, "turn", turn=HELLO))
    call = await store.get_call(CALL)
    assert call is not None and len(call.transcript) == limit
    assert HELLO not in call.transcript
    kept = [seq for seq, r in enumerate(results) if isinstance(r, Applied)]
    assert (await record_report(store, sent(kept[7], "turn", turn=said[kept[7] % 3]))).duplicate
    answered = await record_report(store, sent(limit + 6, "answered"))
    assert answered.after is not None and answered.after.answered
    assert len(await kinds_stored(store)) == limit + 1


async def test_the_turns_of_one_batch_past_max_turns_are_refused_alone(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch counts the call's turns once and each turn it keeps after (record_reports):
    those past the limit are refused, the reports around them applied."""
    monkeypatch.setattr(programs, "MAX_TURNS", 3)
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await record_report(store, sent(0, "turn", turn=HELLO))
    batch = [*(sent(seq, "turn", turn=HELLO) for seq in range(1, 5)), sent(5, "answered")]
    applied = await store.record_reports(batch)
    assert [a.too_many_turns for a in applied] == [False, False, True, True, False]
    assert applied[-1].after is not None and applied[-1].after.answered
    assert await kinds_stored(store) == ["turn", "turn", "turn", "answered"]


# ------------------------------------------------------------------ retention


@pytest.mark.parametrize("with_final", [True, False], ids=["final-report", "agent-died"])
async def test_the_retention_erases_every_report_body_that_held_the_conversation(
    store: CallStore, clock: FakeClock, with_final: bool
) -> None:
    """The turns, the final report and the answering-machine verdict's reason (what the
    callee's line said) are erased; the verdict itself stays on the call, as README says."""
    heard = "Callee said: you have reached Ann Lee, 415 555 0100, leave a message"
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await record_report(store, sent(0, "answered"))
    await record_report(store, sent(1, "amd", amd=AmdVerdict(category="machine-vm", reason=heard)))
    await record_report(store, sent(2, "turn", turn=HELLO))
    if with_final:
        await record_report(store, sent(3, "final", final=CallReport(transcript=[HELLO])))
    ended = Change(Status.VOICEMAIL, "machine-vm", answered=True)
    await store.apply(CALL, "room_finished", lambda _state: ended, room_finished=True)
    clock.advance(10)
    assert await store.erase_call_data(clock.now, 10) == 1

    assert await kinds_stored(store) == ["answered"]
    call = await store.get_call(CALL)
    assert call is not None and call.amd == "machine-vm" and call.status is Status.VOICEMAIL
    assert call.transcript == ()
    # Reports sent again after the erasure keep nothing of what was said: a turn is not
    # stored, a verdict keeps its category (with no final report in, it still counts).
    again = AmdVerdict(category="machine-vm", reason=heard)
    assert (await record_report(store, sent(1, "amd", amd=again))).duplicate is with_final
    assert (await record_report(store, sent(2, "turn", turn=HELLO))).duplicate
    bodies = await execute(
        store, "SELECT kind, body FROM reports WHERE call_id = ? ORDER BY seq", CALL
    )
    assert all("Ann Lee" not in r["body"] for r in bodies)
    assert [r["kind"] for r in bodies] == ["answered"] if with_final else ["answered", "amd"]
    if not with_final:
        assert json.loads(bodies[1]["body"])["amd"] == {"category": "machine-vm", "reason": ""}
    events = await execute(store, "SELECT detail FROM events WHERE call_id = ?", CALL)
    assert all("Ann Lee" not in r["detail"] for r in events)
    call = await store.get_call(CALL)
    assert call is not None and call.amd == "machine-vm" and call.transcript == ()


async def test_an_erased_event_says_when_its_conversation_was_erased(
    store: CallStore, clock: FakeClock
) -> None:
    """An event kept for redelivery (or still retrying) whose conversation the retention
    erased went out with an empty transcript and `personal_data_erased_at: null`: its
    receiver read a call in which nothing was said, not one whose conversation was erased.
    It now says when, as GET /calls/{id} does."""
    await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
    await record_report(store, sent(0, "answered"))
    await record_report(store, sent(1, "final", final=CallReport(transcript=[HELLO])))
    ended = Change(Status.COMPLETED, answered=True)
    await store.apply(CALL, "room_finished", lambda _state: ended, room_finished=True)
    clock.advance(10)
    assert await store.erase_call_data(clock.now, 10) == 1

    call = await store.get_call(CALL)
    assert call is not None and call.data_erased_at is not None
    rows = await execute(store, "SELECT type, data FROM outbox WHERE call_id = ?", CALL)
    assert {r["type"] for r in rows} >= {"call.report", "call.ended"}
    for row in rows:
        data = json.loads(row["data"])
        assert data["transcript"] == [] and "Hello Ann" not in row["data"]
        assert data["personal_data_erased_at"] == call.to_json()["personal_data_erased_at"]


async def test_a_final_report_arriving_as_the_retention_erases_its_call_is_kept_erased(
    postgres_dsn: str, clock: FakeClock
) -> None:
    """PostgreSQL: the erasure read its calls without locking them, so a final report that
    landed between that read and its UPDATE (another server, or this one's pool: the agent
    reports as the call ends, and CALL_DATA_RETENTION_DAYS=0 erases at the next pass) was
    overwritten with the report read before it, none: GET showed report_status unavailable
    and usage null for a call whose agent had reported. The calls read are now locked: the
    report waits for the erasure, and is kept without the conversation, as any later one."""
    store = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=4)
    try:
        await store.create_call(NewCall(CALL, "+1234567890", "Ann", "en", "Calm"))
        await record_report(store, sent(0, "answered"))
        ended = Change(Status.COMPLETED, answered=True)
        await store.apply(CALL, "room_finished", lambda _state: ended, room_finished=True)
        clock.advance(10)
        final = CallReport(transcript=[HELLO], usage={"llm": []}, ended_by="callee")
        async with store._pool.acquire() as conn, conn.transaction():
            erasing = programs.erase_call_data(programs.POSTGRES, clock.now, clock.now, 10)
            query = next(erasing)  # the erasure has read its calls...
            rows = cast(list[Row], await conn.fetch(numbered(query.sql), *query.args))
            # ...when the agent's final report comes
            reporting = asyncio.ensure_future(record_report(store, sent(1, "final", final=final)))
            await asyncio.wait([reporting], timeout=1.0)
            try:
                while True:
                    query = erasing.send(rows)
                    rows = cast(list[Row], await conn.fetch(numbered(query.sql), *query.args))
            except StopIteration:
                pass
        await reporting
        call = await store.get_call(CALL)
        assert call is not None and call.data_erased_at is not None
        assert call.transcript == () and call.report is not None
        assert call.report.usage == {"llm": []} and call.report_status(clock.now) == "complete"
    finally:
        await store.close()


async def test_the_retention_erases_the_oldest_calls_first_and_no_more_than_asked(
    store: CallStore, clock: FakeClock
) -> None:
    """All in one transaction, 200,000 calls past their retention held the server 107 s
    before it listened, and 227 MB."""
    for n in range(5):
        call_id = f"call-00000000001{n}"
        await store.create_call(NewCall(call_id, "+1234567890", "Ann", "en", "Calm"))
        ended = clock.now - 100 + n  # call ...10 ended first
        await execute(store, "UPDATE calls SET ended_at = ? WHERE call_id = ?", ended, call_id)
    assert await store.erase_call_data(clock.now, 2) == 2
    erased = [c.call_id for c in await store.list_calls() if c.data_erased_at is not None]
    assert sorted(erased) == ["call-000000000010", "call-000000000011"]
    assert await store.erase_call_data(clock.now, 2) == 2
    assert await store.erase_call_data(clock.now, 2) == 1
    assert await store.erase_call_data(clock.now, 2) == 0


# ---------------------------------------------------------------- erasure on request

PLACED_WITH = {
    "caller_name": "Ann Lee",
    "agent_instructions": "Remind Ann Lee of her appointment",
    "tts_language": "en",
    "tts_emotion": "Calm",
    "additional_params": {"account": "Ann Lee 42"},
    "ringing_timeout_s": 30,
    "max_duration_s": 600,
    "first_message": "Hello Ann Lee",
    "voicemail": {"action": "leave_message", "message": "Ann Lee, please call back"},
    "analysis": {"success_criteria": "Ann Lee confirms", "fields": {}},
}


async def ended_call(
    store: CallStore, call_id: str = CALL, number: str = "+14155550100", *, final: bool = True
) -> None:
    """A call to `number` placed with PLACED_WITH, whose callee said things, ended."""
    await store.create_call(NewCall(call_id, number, "Ann Lee", "en", "Calm", config=PLACED_WITH))
    heard = AmdVerdict(category="human", reason="Ann Lee speaking")
    turn = TranscriptTurn(role="callee", text="This is Ann Lee", at_s=1.0)
    reports = [sent(0, "answered"), sent(1, "amd", amd=heard), sent(2, "turn", turn=turn)]
    if final:
        reports.append(sent(3, "final", final=CallReport(transcript=[turn], summary="Ann Lee")))
    await store.record_reports([r.model_copy(update={"call_id": call_id}) for r in reports])
    ended = Change(Status.COMPLETED, answered=True)
    await store.apply(call_id, "room_finished", lambda _state: ended, room_finished=True)


async def everything_kept_of(store: CallStore, call_id: str) -> str:
    """Every row the database keeps of a call (its row, reports, timeline, events), as text."""
    rows = []
    for table in ("calls", "reports", "events", "outbox"):
        rows += await execute(store, f"SELECT * FROM {table} WHERE call_id = ?", call_id)  # noqa: S608
    return repr([dict(r) for r in rows])


async def test_erasing_a_call_on_request_leaves_nothing_of_its_callee_but_the_number(
    store: CallStore, clock: FakeClock
) -> None:
    """What the retention erases (the conversation, in the call, its reports and events), and
    what the call was placed with that names its callee, in the call and its events; status,
    timings and verdicts stay. A report arriving later keeps none of it either."""
    await ended_call(store, final=False)
    assert "Ann Lee" in await everything_kept_of(store, CALL)
    clock.advance(5)

    erasure = await store.erase_calls_now(call_id=CALL)

    assert (erasure.erased, erasure.live, erasure.erased_at) == ((CALL,), (), clock.now)
    assert "Ann Lee" not in await everything_kept_of(store, CALL)
    call = await store.get_call(CALL)
    assert call is not None and call.data_erased_at == clock.now
    assert (call.status, call.amd, call.phone_number) == (Status.COMPLETED, "human", "+14155550100")
    assert call.config is not None and call.config["tts_language"] == "en"
    assert call.config["voicemail"] == {"action": "leave_message"}
    # The agent's final report, late: kept without what was said.
    said = TranscriptTurn(role="callee", text="This is Ann Lee", at_s=1.0)
    late = CallReport(transcript=[said], summary="Ann Lee", usage={"llm": []})
    assert not (await record_report(store, sent(3, "final", final=late))).duplicate
    assert "Ann Lee" not in await everything_kept_of(store, CALL)
    call = await store.get_call(CALL)
    assert call is not None and call.report is not None and call.report.usage == {"llm": []}


async def test_a_live_call_is_not_erased_and_is_named(store: CallStore, clock: FakeClock) -> None:
    """Its conversation is still coming: nothing is erased (all or nothing), and the answer
    names the live call, so the request can be made again once it has ended."""
    await ended_call(store, "call-00000000000b")
    await store.create_call(NewCall(CALL, "+14155550100", "Ann Lee", "en", "Calm"))
    erasure = await store.erase_calls_now(numbers=["+14155550100"])
    assert (erasure.erased, erasure.live) == ((), (CALL,))
    assert "Ann Lee" in await everything_kept_of(store, "call-00000000000b")
    assert (await store.erase_calls_now(call_id=CALL)).live == (CALL,)


async def test_a_number_of_many_calls_is_erased_a_batch_a_transaction(
    store: CallStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of a number's calls were erased in one transaction, holding the write lock every
    other write waits for (SQLite; 20,000 calls to one number: 2 s). They are erased
    ERASE_NOW_BATCH a transaction, in the order they ended; a call placed to the number
    meanwhile (after the request) is left alone."""
    monkeypatch.setattr(programs, "ERASE_NOW_BATCH", 2, raising=False)
    calls = [f"call-00000000010{i}" for i in range(5)]
    for call_id in calls:
        await ended_call(store, call_id)
        clock.advance(1)
    assert isinstance(store, SqlCallStore)
    run, erasing = store._run, []

    async def counted(program: Any, *, write: bool) -> Any:
        result = await run(program, write=write)
        if getattr(program, "__name__", "") == "erase_calls_now":
            erasing.append(result)
            if len(erasing) == 1:  # a call placed to the number after the erasure began
                await store.create_call(NewCall(CALL, "+14155550100", "Ann Lee", "en", "Calm"))
        return result

    monkeypatch.setattr(store, "_run", counted)

    erasure = await store.erase_calls_now(numbers=["+14155550100"])

    assert erasure.erased == tuple(calls) and erasure.live == ()
    assert len(erasing) == 3  # 2, 2 and 1
    for call_id in calls:
        assert "Ann Lee" not in await everything_kept_of(store, call_id)
    live = await store.get_call(CALL)
    assert live is not None and live.caller_name == "Ann Lee" and live.data_erased_at is None


async def test_erasing_a_number_erases_each_of_its_calls_and_no_other(
    store: CallStore, clock: FakeClock
) -> None:
    first, second, other = "call-000000000001", "call-000000000002", "call-000000000003"
    await ended_call(store, first)
    clock.advance(1)
    await ended_call(store, other, "+14155550199")
    clock.advance(1)
    await ended_call(store, second)
    # One the retention erased already: its name and instructions go too.
    assert await store.erase_call_data(clock.now + 1, 1) == 1

    erasure = await store.erase_calls_now(numbers=["+14155550100"])

    assert erasure.erased == (first, second)  # in the order they ended
    for call_id in (first, second):
        assert "Ann Lee" not in await everything_kept_of(store, call_id)
    assert "Ann Lee" in await everything_kept_of(store, other)
    nobody = await store.erase_calls_now(numbers=["+14155550123"])
    assert (nobody.erased, nobody.live) == ((), ())
    assert (await store.erase_calls_now(call_id="call-00000000dead")).erased == ()


async def test_an_erasure_of_a_number_and_the_retention_at_once_do_not_deadlock(
    postgres_dsn: str, clock: FakeClock
) -> None:
    """PostgreSQL: the erasure of a number locked its calls in the order they were placed,
    the retention in the order they ended. Two calls to one number that ended in the other
    order (A placed first, B ended first), both erased at once while A's row was held a
    moment (a report of A being stored): the retention held B and waited for A, the erasure
    held A and waited for B, and PostgreSQL broke the deadlock with an error (a 503, or the
    reaper's pass lost). Both now lock in the order the calls ended."""
    store = await PostgresCallStore.open(postgres_dsn, clock=clock, pool_size=6)
    first, second = "call-000000000001", "call-000000000002"
    try:
        for call_id in (first, second):
            await store.create_call(NewCall(call_id, "+14155550100", "Ann Lee", "en", "Calm"))
            clock.advance(1)
        ended = Change(Status.COMPLETED, answered=True)
        for call_id in (second, first):  # B ends first
            await store.apply(call_id, "room_finished", lambda _state: ended, room_finished=True)
            clock.advance(1)
        async with store._pool.acquire() as conn:
            holding = conn.transaction()
            await holding.start()
            await conn.execute("SELECT 1 FROM calls WHERE call_id = $1 FOR UPDATE", first)
            erasing = asyncio.ensure_future(store.erase_calls_now(numbers=["+14155550100"]))
            await asyncio.sleep(0.3)  # waiting for A (and, placed-first, holding nothing)
            sweeping = asyncio.ensure_future(store.erase_call_data(clock.now, 10))
            await asyncio.sleep(0.3)
            await holding.commit()
        erased, swept = await asyncio.gather(erasing, sweeping, return_exceptions=True)
        assert not isinstance(erased, BaseException), erased
        assert not isinstance(swept, BaseException), swept
        assert set(erased.erased) == {first, second}
    finally:
        await store.close()
