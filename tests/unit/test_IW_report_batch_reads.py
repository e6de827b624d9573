"""A batch of an agent's reports (one POST, one transaction) reads its call's row and counts
its turns once, not once per report: the row is locked from its first read, and only the
batch's own reports change it. A call's usual batch after its answer (the machine verdict,
four turns, the final report) read the row six times and counted the turns four times. And
the verdict's and the final report's UPDATEs return the whole row (RETURNING *), where it
was read again right after each; an answer is decided on the row the report read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.calls.models import NewCall
from common.contracts import AgentReport, AmdVerdict, CallReport, TranscriptTurn
from common.storage import programs
from common.storage.sqlite import SqliteCallStore

CALL = "call-0000000iw001"
ROW_READ = "SELECT * FROM calls"
TURNS_COUNTED = "SELECT COUNT(*) AS n FROM reports"


def turn(seq: int, at: float) -> AgentReport:
    said = TranscriptTurn(role="callee", text=f"turn {seq}", at_s=float(seq))
    return AgentReport(call_id=CALL, seq=seq, kind="turn", at=at, turn=said)


async def test_a_batch_reads_its_call_and_counts_its_turns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(programs, "MAX_TURNS", 5)
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
        await store.start_dial(CALL)
        at = (await store.get_call(CALL, with_timeline=False)).created_at  # type: ignore[union-attr]
        await store.record_reports([AgentReport(call_id=CALL, seq=0, kind="answered", at=at)])
        batch = [
            AgentReport(call_id=CALL, seq=1, kind="amd", at=at, amd=AmdVerdict(category="human")),
            *(turn(seq, at) for seq in range(2, 9)),  # the last two past the 5 kept
            AgentReport(
                call_id=CALL,
                seq=9,
                kind="final",
                at=at,
                final=CallReport(ended_by="callee", transcript=[]),
            ),
        ]
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        applied = await store.record_reports(batch)
        store.conn.set_trace_callback(None)

        assert [a.too_many_turns for a in applied] == [False] * 6 + [True] * 2 + [False]
        assert applied[-1].after is not None and applied[-1].after.report is not None
        call = await store.get_call(CALL)
        assert call is not None and call.amd == "human"
        kept = sqlite3.connect(tmp_path / "calls.db").execute(
            "SELECT seq FROM reports WHERE kind = 'turn' ORDER BY seq"
        )
        assert [seq for (seq,) in kept] == [2, 3, 4, 5, 6]
        # Once for the batch: not again for each report (9 times), nor after the verdict's
        # and the final report's changes (2), which return the row their lines are decided on
        assert len([s for s in statements if s.startswith(ROW_READ)]) == 1
        assert len([s for s in statements if s.startswith(TURNS_COUNTED)]) == 1  # was 7
    finally:
        await store.close()


async def test_an_answer_report_reads_its_call_once(tmp_path: Path) -> None:
    """The row the report is checked against is the one its answer is decided on: it was
    read twice, a few columns for the report, then the whole row for the answer (apply)."""
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
        await store.start_dial(CALL)
        at = (await store.get_call(CALL, with_timeline=False)).created_at  # type: ignore[union-attr]
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        [applied] = await store.record_reports(
            [AgentReport(call_id=CALL, seq=0, kind="answered", at=at)]
        )
        store.conn.set_trace_callback(None)
        assert applied.after is not None and applied.after.answered_at == at
        assert len([s for s in statements if s.startswith(ROW_READ)]) == 1  # was 1 and 1 more
        # An answer is kept once a call: inserted only if none is kept, not looked for first
        assert not [s for s in statements if "AS seen FROM reports" in s]  # was 1
        assert len([s for s in statements if s.startswith("SELECT ")]) == 1  # was 3
    finally:
        await store.close()
