"""A LiveKit webhook's apply writes its timeline line first, once the call is read: its
unique event id is the duplicate check. Each webhook looked its event id up first (SELECT 1
AS seen FROM events), then wrote the same line last: a statement more for every webhook, six
a call. A duplicate still writes nothing, and a line's statuses are those of its change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from common.calls.models import NewCall
from common.calls.outcomes import CallState, Change, Status
from common.storage.sqlite import SqliteCallStore

CALL = "call-0000000iw002"


def no_change(_state: CallState) -> Change | None:
    return None


def answered(_state: CallState) -> Change | None:
    return Change(Status.IN_PROGRESS, answered=True)


async def test_a_webhook_is_one_read_and_one_line_and_a_duplicate_writes_nothing(
    tmp_path: Path,
) -> None:
    store = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await store.create_call(NewCall(CALL, "+14155557701", "Bob", "en", "Calm"))
        await store.start_dial(CALL)
        statements: list[str] = []
        store.conn.set_trace_callback(statements.append)
        applied = await store.apply(CALL, "room_started", no_change, event_id="EV_1")
        store.conn.set_trace_callback(None)
        assert not applied.duplicate and applied.change is None
        assert [s.split(" ")[0] for s in statements if not s.startswith("BEGIN")] == [
            "SELECT",  # the call, locked
            "INSERT",  # its line
            "COMMIT",
        ]  # was SELECT 1 AS seen FROM events first

        await store.apply(CALL, "participant_joined", answered, event_id="EV_2")
        other = sqlite3.connect(tmp_path / "calls.db")  # sees each commit that wrote calls.db
        for event_id in ("EV_1", "EV_2"):  # sent again: nothing written, room flag or not
            changes = store.conn.total_changes
            version = other.execute("PRAGMA data_version").fetchone()
            again = await store.apply(
                CALL, "participant_joined", answered, event_id=event_id, room_finished=True
            )
            assert again.duplicate and store.conn.total_changes == changes
            # (the conflict alone took an AUTOINCREMENT number: total_changes does not count it)
            assert other.execute("PRAGMA data_version").fetchone() == version
        other.close()
        call = await store.get_call(CALL)
        assert call is not None and call.status is Status.IN_PROGRESS
        assert call.room_finished_at is None
        lines = [(e.kind, e.event_id, e.from_status, e.to_status) for e in call.timeline]
        assert lines[-2:] == [
            ("room_started", "EV_1", None, None),
            ("participant_joined", "EV_2", "dialing", "in_progress"),
        ]
    finally:
        await store.close()
