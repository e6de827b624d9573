"""An upgrade's migration writes its index builds through the log (calls.db-wal): tens of MB
over a large table. Left there, the first write after start-up found the log past
WAL_WARN_BYTES and warned of a reader holding it (a backup tool, a `sqlite3` shell), when
nobody held it: seen upgrading a 1 GB calls.db of schema 10 (64 MB of log, the WARNING, then
'back to 8 MB' at the next write)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from common.storage import sqlite as sqlite_store
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock

RECIPIENTS = 20_000


def schema_22_with_recipients(path: Path) -> None:
    """A database of the release before 0023 (recipients by number), with a campaign's list."""
    with sqlite3.connect(path) as db:
        db.execute("DROP INDEX campaign_recipients_phone")
        db.executemany(
            "INSERT INTO campaign_recipients (campaign_id, idx, row_number, phone_number,"
            " fields, state, next_at, updated_at) VALUES ('cmp-1', ?, ?, ?, ?, 'pending', 0, 0)",
            (
                (i, i, f"+1415{i:07d}", json.dumps({"name": f"Recipient {i}" * 3}))
                for i in range(RECIPIENTS)
            ),
        )
        db.execute("PRAGMA user_version = 22")
    db.close()


async def test_the_log_a_migration_wrote_is_emptied_as_the_server_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path, FakeClock())
    await store.close()
    schema_22_with_recipients(path)
    # The warning's bound, brought down to what this small table's index writes.
    monkeypatch.setattr(sqlite_store, "WAL_WARN_BYTES", 256 * 1024)
    with caplog.at_level(logging.INFO, logger="common.storage.sqlite"):
        store = await SqliteCallStore.open(path, FakeClock())
        try:
            assert os.path.getsize(f"{path}-wal") == 0  # what it wrote is in calls.db
            await store.add_dnc(["+14155550100"], "api")  # the first write after start-up
        finally:
            await store.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("at schema version" in line for line in said), said
    assert not [line for line in said if "grows with every write" in line], said
    with sqlite3.connect(path) as db:
        indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert "campaign_recipients_phone" in indexes
