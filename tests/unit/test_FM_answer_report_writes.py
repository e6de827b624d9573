"""The agent's answer report, in its usual order (before any LiveKit webhook showed the
answer), costs no statement of its own: 9f6c990's re-dating of an answer a webhook showed
first ran an UPDATE for every call's answer report, which changed nothing but in that rare
order (a write more per call, on the database's one writer)."""

from __future__ import annotations

from pathlib import Path

from common.calls.models import NewCall
from common.contracts import AgentReport
from common.storage.sqlite import SqliteCallStore

CALL = "call-0000000fm001"


async def test_a_first_answer_report_runs_no_redating_update(tmp_path: Path) -> None:
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
        await store.start_dial(CALL)
        created = await store.get_call(CALL)
        assert created is not None
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        answer = AgentReport(call_id=CALL, seq=0, kind="answered", at=created.created_at)
        [applied] = await store.record_reports([answer])
        store.conn.set_trace_callback(None)
        assert applied.after is not None and applied.after.answered_at == answer.at
        redating = [s for s in statements if s.startswith("UPDATE calls SET answered_at")]
        assert redating == []
    finally:
        await store.close()
