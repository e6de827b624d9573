"""A read of a call's row that began before an erasure committed, and parsed its report and
config after the erasure forgot them (PostgreSQL runs it on another connection, beside the
erasure's transaction), kept the erased name and conversation in this process's parsed-text
cache again, for up to 5 minutes: `forget` ran before the commit, the racing read's `keep`
after it. A text forgotten lately is not kept again."""

from __future__ import annotations

import uuid

from common.calls.models import NewCall
from common.calls.outcomes import Change, Status
from common.contracts import AgentReport, CallReport, TranscriptTurn
from common.storage import programs
from common.storage.base import CallStore


def _final(call_id: str, summary: str) -> AgentReport:
    final = CallReport(
        transcript=[TranscriptTurn(role="agent", text="Hello Ann", at_s=0.5)],
        summary=summary,
        ended_by="callee",
    )
    return AgentReport(call_id=call_id, seq=1, kind="final", at=1_700_000_001.0, final=final)


async def test_a_read_racing_an_erasure_does_not_keep_what_it_erased(store: CallStore) -> None:
    call_id = f"call-{uuid.uuid4().hex[:12]}"
    config = {"caller_name": "Ann", "agent_instructions": f"Remind Ann ({call_id})."}
    await store.create_call(NewCall(call_id, "+1234567890", "Ann", "en", "Calm", config=config))
    await store.record_reports([_final(call_id, f"Ann agreed ({call_id}).")])
    await store.apply(call_id, "room_finished", lambda _s: Change(Status.COMPLETED, "completed"))
    raced = await store.get_call(call_id)  # the racing read: its row, fetched before the commit
    assert raced is not None and raced.report is not None and raced.config == config
    [report_text] = [t for t in programs._READ_REPORTS._by_text if call_id in t]
    [config_text] = [t for t in programs._READ_CONFIGS._by_text if call_id in t]

    erasure = await store.erase_calls_now(call_id=call_id)
    assert erasure.erased == (call_id,)
    # ... and parsed after the erasure's forget: what it parses is kept as any read's
    programs.stored_report(call_id, report_text)
    programs.stored_config(call_id, config_text)
    assert not any(call_id in text for text in programs._READ_REPORTS._by_text)
    assert not any(call_id in text for text in programs._READ_CONFIGS._by_text)
    erased = await store.get_call(call_id)  # the erased row's texts are kept as any others
    assert erased is not None and erased.report is not None and erased.report.summary is None


def test_what_was_forgotten_may_be_kept_again_after_a_while() -> None:
    now = [0.0]
    kept: programs.ReadTexts[str] = programs.ReadTexts(256, 4096, clock=lambda: now[0])
    kept.forget("a")
    kept.keep("a", "parsed a")
    assert kept.get("a") is None
    now[0] += kept.KEEP_S + 1
    kept.keep("a", "parsed a")
    assert kept.get("a") == "parsed a" and not kept._forgotten
    for n in range(kept.FORGOTTEN_MAX + 5):  # bounded: the oldest marks go first
        kept.forget(f"t{n}")
    assert len(kept._forgotten) == kept.FORGOTTEN_MAX
