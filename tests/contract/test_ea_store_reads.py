"""What a call's placing and settling costs the database's thread, on every backend: what
the store already read or parsed is not read or parsed again (issue 17). Each test checks
the answers stay as they were, and counts the work with spies on the real code."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from common.calls.models import NewCall
from common.calls.outcomes import Change, Status
from common.contracts import AgentReport, CallReport, TranscriptTurn
from common.storage import programs
from common.storage.base import CallStore

HELLO = TranscriptTurn(role="agent", text="Hello Ann", at_s=0.5)


class CountingReports:
    """CallReport as programs.py uses it, counting the stored texts it parses."""

    def __init__(self) -> None:
        self.parsed: list[str] = []

    def model_validate_json(self, text: str) -> CallReport:
        self.parsed.append(text)
        return CallReport.model_validate_json(text)

    def model_validate(self, value: Any) -> CallReport:
        return CallReport.model_validate(value)


class CountingJson:
    """The json module as programs.py uses it, counting the texts it parses."""

    def __init__(self) -> None:
        self.parsed: list[str] = []

    def loads(self, text: str) -> Any:
        self.parsed.append(text)
        return json.loads(text)

    def dumps(self, value: Any, **kwargs: Any) -> str:
        return json.dumps(value, **kwargs)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingReports:
    spy = CountingReports()
    monkeypatch.setattr(programs, "CallReport", spy)
    return spy


def final_report(call_id: str, seq: int, summary: str) -> AgentReport:
    final = CallReport(transcript=[HELLO], summary=summary, ended_by="callee")
    return AgentReport(call_id=call_id, seq=seq, kind="final", at=1_700_000_001.0, final=final)


async def test_a_final_report_is_parsed_once_however_often_its_call_is_read(
    store: CallStore, counting: CountingReports
) -> None:
    """Every change after the final report read the call's row and parsed and validated its
    report again: 6 of a bench call's 14 reads (its webhooks, the report's own apply, its
    events). The same text is parsed once; each read still shows the report."""
    call_id = f"call-{uuid.uuid4().hex[:12]}"
    summary = f"Greeted Ann ({call_id})."  # a text no other test stored
    await store.create_call(NewCall(call_id, "+1234567890", "Ann", "en", "Calm"))
    await store.apply(call_id, "answered", lambda _s: Change(Status.IN_PROGRESS, answered=True))
    [applied] = await store.record_reports([final_report(call_id, 1, summary)])
    assert applied.after is not None and applied.after.report is not None
    for kind in ("track_published", "participant_left"):
        await store.apply(call_id, kind, lambda _s: None, event_id=f"EV_{kind}_{call_id}")
    ended = await store.apply(
        call_id,
        "room_finished",
        lambda _s: Change(Status.COMPLETED, "completed"),
        event_id=f"EV_room_finished_{call_id}",
        room_finished=True,
    )
    read = [await store.get_call(call_id), await store.get_call(call_id, with_timeline=False)]
    for call in (ended.before, ended.after, applied.after, *read):
        assert call is not None and call.report is not None
        assert call.report.summary == summary and call.transcript == (HELLO,)
        assert call.report.ended_by == "callee"
    assert ended.after is not None and ended.after.status is Status.COMPLETED
    assert len([text for text in counting.parsed if summary in text]) == 1


async def test_a_report_changed_in_the_row_is_read_as_it_is_now(
    store: CallStore, counting: CountingReports
) -> None:
    """Parsed reports are kept by their text: the retention's erasure writes another text,
    and the call reads erased at once (not the report read before it)."""
    call_id = f"call-{uuid.uuid4().hex[:12]}"
    summary = f"Greeted Ann ({call_id})."
    await store.create_call(NewCall(call_id, "+1234567890", "Ann", "en", "Calm"))
    await store.record_reports([final_report(call_id, 1, summary)])
    before = await store.get_call(call_id)
    assert before is not None and before.report is not None and before.report.summary == summary
    await store.apply(call_id, "room_finished", lambda _s: Change(Status.COMPLETED, "completed"))
    ended = await store.get_call(call_id)
    assert ended is not None and ended.ended_at is not None
    assert await store.erase_call_data(ended.ended_at + 1, 10) == 1
    erased = await store.get_call(call_id)
    assert erased is not None and erased.report is not None
    assert erased.report.summary is None and erased.transcript == ()
    assert erased.report.ended_by == "callee"  # what the erasure keeps
    again = await store.get_call(call_id)
    assert again is not None and again.report == erased.report


def test_the_texts_kept_are_bounded_by_count_and_by_size() -> None:
    kept: programs.ReadTexts[CallReport] = programs.ReadTexts(256, 4 * 1024 * 1024)
    report = CallReport(transcript=[HELLO])
    for n in range(kept.max_entries + 10):
        kept.keep(f"{n:08d}", report)
    assert kept.get("00000000") is None and kept.get("00000009") is None
    assert kept.get("00000010") is report and kept.get(f"{kept.max_entries + 9:08d}") is report
    large = "x" * (kept.max_chars // 4 - 1)  # with its digit, the largest kept: four fill it
    for n in range(5):
        kept.keep(f"{n}{large}", report)
    assert kept.get(f"0{large}") is None and kept.get(f"4{large}") is report
    assert sum(len(text) for text in kept._by_text) <= kept.max_chars
    larger = large + "xx"  # past a quarter: not kept at all
    kept.keep(larger, report)
    assert kept.get(larger) is None and kept.get(f"4{large}") is report


async def test_a_config_is_parsed_once_however_often_its_call_is_read(
    store: CallStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each read of a call's row parsed the config it was placed with again (14 reads for a
    bench call); the same text is parsed once, and every read still shows it."""
    spy = CountingJson()
    monkeypatch.setattr(programs, "json", spy)
    call_id = f"call-{uuid.uuid4().hex[:12]}"
    config = {"caller_name": "Ann", "agent_instructions": f"Greet Ann ({call_id}).", "n": [1]}
    created = await store.create_call(
        NewCall(call_id, "+1234567890", "Ann", "en", "Calm", config=config)
    )
    dialled = await store.start_dial(call_id)
    answered = await store.apply(
        call_id, "answered", lambda _s: Change(Status.IN_PROGRESS, answered=True)
    )
    quiet = await store.apply(call_id, "track_published", lambda _s: None, event_id=f"EV_{call_id}")
    read = await store.get_call(call_id)
    calls = (created.after, dialled, answered.before, answered.after, quiet.after, read)
    for call in calls:
        assert call is not None and call.config == config
    assert (
        len([text for text in spy.parsed if call_id in text and "agent_instructions" in text]) == 1
    )


async def test_an_erasure_leaves_no_parsed_copy_of_what_it_erased(store: CallStore) -> None:
    """Parsed configs and reports are kept by their text: an erasure on request took the
    callee's name, instructions and conversation out of the database, and this process went
    on holding them (until 256 newer ones came: on a quiet server, for good)."""
    call_id = f"call-{uuid.uuid4().hex[:12]}"
    config = {"caller_name": "Ann", "agent_instructions": f"Remind Ann ({call_id})."}
    summary = f"Ann agreed ({call_id})."
    await store.create_call(NewCall(call_id, "+1234567890", "Ann", "en", "Calm", config=config))
    await store.record_reports([final_report(call_id, 1, summary)])
    await store.apply(call_id, "room_finished", lambda _s: Change(Status.COMPLETED, "completed"))
    read = await store.get_call(call_id)
    assert read is not None and read.config == config and read.report is not None
    assert any(call_id in text for text in programs._READ_CONFIGS._by_text)
    assert any(call_id in text for text in programs._READ_REPORTS._by_text)
    erasure = await store.erase_calls_now(call_id=call_id)
    assert erasure.erased == (call_id,) and erasure.placed_with == (config,)
    assert not any(call_id in text for text in programs._READ_CONFIGS._by_text)
    assert not any(call_id in text for text in programs._READ_REPORTS._by_text)
    erased = await store.get_call(call_id)
    assert erased is not None and erased.report is not None and erased.config is not None
    assert erased.report.summary is None and erased.config["agent_instructions"] == ""


def test_what_is_kept_goes_after_a_while() -> None:
    """Another server's erasure cannot tell this one: what it keeps goes within KEEP_S."""
    now = [0.0]
    kept: programs.ReadTexts[str] = programs.ReadTexts(256, 4096, clock=lambda: now[0])
    kept.keep("a", "parsed a")
    now[0] += kept.KEEP_S / 2
    kept.keep("b", "parsed b")
    assert kept.get("a") == "parsed a" and kept.get("b") == "parsed b"
    now[0] += kept.KEEP_S / 2 + 1
    assert kept.get("a") is None and kept.get("b") == "parsed b"
    assert list(kept._by_text) == ["b"]  # dropped, not only hidden
    kept.forget("b", None)
    assert kept.get("b") is None and kept._chars == 0
