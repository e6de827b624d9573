"""A calls.db-wal left beside a calls.db deleted or moved away: the next start made a new
calls.db and SQLite dropped the log, with the writes in it (on a young database, all of
them), silently. Now it is kept aside as calls.db-wal.orphan-<time>, with a WARNING naming
both files, and can be put back beside the database it belongs to."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from common.storage.sqlite import SqliteCallStore


def _log_not_yet_in(path: Path, saved: Path) -> bytes:
    """A database at `path` whose row is only in its -wal (as a crash leaves it), that log's
    bytes, and a copy of the database file as it was then at `saved`."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE kept (what TEXT)")
    conn.execute("INSERT INTO kept VALUES ('a call')")
    log = Path(f"{path}-wal").read_bytes()
    shutil.copyfile(path, saved)
    conn.close()  # checkpoints and removes the log: put back below, as a crash leaves it
    return log


@pytest.mark.parametrize("database", ["deleted", "emptied"])
async def test_a_log_without_its_database_is_kept_aside_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, database: str
) -> None:
    path = tmp_path / "calls.db"
    log = _log_not_yet_in(path, tmp_path / "moved-away.db")
    path.unlink()
    if database == "emptied":
        path.write_bytes(b"")
    Path(f"{path}-wal").write_bytes(log)

    with caplog.at_level(logging.WARNING):
        store = await SqliteCallStore.open(path)
    await store.close()

    kept = list(tmp_path.glob("calls.db-wal.orphan-*"))
    assert len(kept) == 1, sorted(p.name for p in tmp_path.iterdir())
    assert kept[0].read_bytes() == log  # whole, not dropped
    said = [r for r in caplog.records if "kept aside" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert str(path) in said[0].getMessage() and str(kept[0]) in said[0].getMessage()
    # Put back beside the database it belongs to, its write is read.
    shutil.copyfile(tmp_path / "moved-away.db", tmp_path / "back.db")
    shutil.copyfile(kept[0], tmp_path / "back.db-wal")
    conn = sqlite3.connect(tmp_path / "back.db")
    assert conn.execute("SELECT what FROM kept").fetchall() == [("a call",)]
    conn.close()


async def test_a_log_beside_its_database_is_left_to_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server killed leaves calls.db and its -wal: the restart reads the log, as before."""
    path = tmp_path / "calls.db"
    log = _log_not_yet_in(path, tmp_path / "copy.db")
    Path(f"{path}-wal").write_bytes(log)
    with caplog.at_level(logging.WARNING):
        store = await SqliteCallStore.open(path)
    await store.close()
    assert not list(tmp_path.glob("*orphan*"))
    assert not [r for r in caplog.records if "kept aside" in r.getMessage()]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT what FROM kept").fetchall() == [("a call",)]
    conn.close()
