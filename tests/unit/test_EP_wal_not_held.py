"""calls.db-wal past WAL_WARN_BYTES is said to be held by a reader only if one holds it.

An upgrade's migration builds its indexes through the log (64 MB after a 1 GB calls.db of
schema 10), and the first write after start-up found the file that large and logged a
WARNING that a reader (a backup tool, a `sqlite3` shell inside BEGIN) kept it from being
emptied, when nobody did; the next write cut it back ('back to 8 MB'). 9f91c77 backed out
the fix that emptied the log at the migration's end (it broke the look for a copy over
calls.db) and left the false warning. Now the warning is said only when a checkpoint that
waits for nobody cannot copy all of the log: a reader's snapshot holds it."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from common.storage import sqlite as sqlite_store
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock

RECIPIENTS = 20_000
HELD = "grows with every write"


def schema_22_with_recipients(path: Path) -> None:
    """A database of the release before 0023 (recipients by number), with a campaign's list:
    0023's index over it is written through the log."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP INDEX campaign_recipients_phone")
        db.executemany(
            "INSERT INTO campaign_recipients (campaign_id, idx, row_number, phone_number,"
            " fields, state, next_at, updated_at) VALUES ('cmp-1', ?, ?, ?, ?, 'pending', 0, 0)",
            (
                (i, i, f"+1415{i:07d}", json.dumps({"name": f"Recipient {i}" * 3}))
                for i in range(RECIPIENTS)
            ),
        )
        db.execute("DROP INDEX deliveries_due_heads")  # and 0024's, after it
        db.execute("DROP INDEX deliveries_claimed")
        db.execute("ALTER TABLE deliveries DROP COLUMN behind")
        db.execute("ALTER TABLE outbox DROP COLUMN takeovers")  # and 0025's
        db.execute("ALTER TABLE outbox DROP COLUMN given_up_at")
        db.execute("PRAGMA user_version = 22")
    db.close()


@pytest.fixture
def upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The warning's bound, brought down to what this small table's index writes.
    monkeypatch.setattr(sqlite_store, "WAL_WARN_BYTES", 256 * 1024)
    return tmp_path / "calls.db"


async def test_a_large_log_nobody_holds_is_not_said_held(
    upgraded: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteCallStore.open(upgraded, FakeClock())
    await store.close()
    schema_22_with_recipients(upgraded)
    with caplog.at_level(logging.INFO, logger="common.storage.sqlite"):
        store = await SqliteCallStore.open(upgraded, FakeClock())
        try:
            assert Path(f"{upgraded}-wal").stat().st_size > sqlite_store.WAL_WARN_BYTES
            await store.add_dnc(["+14155550100"], "api")  # the first writes after start-up
            await store.add_dnc(["+14155550101"], "api")
        finally:
            await store.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("at schema version" in line for line in said), said
    assert not [line for line in said if HELD in line], said


async def test_a_log_a_reader_holds_is_still_said_held(
    upgraded: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SqliteCallStore.open(upgraded, FakeClock())
    reader = sqlite3.connect(upgraded, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls").fetchone()  # its snapshot, held
        with caplog.at_level(logging.INFO, logger="common.storage.sqlite"):
            for n in range(400):
                if any(HELD in r.getMessage() for r in caplog.records):
                    break
                await store.add_dnc([f"+1415555{n:04d}"], "api")
    finally:
        reader.close()
        await store.close()
    said = [r.getMessage() for r in caplog.records if HELD in r.getMessage()]
    assert len(said) == 1, said
