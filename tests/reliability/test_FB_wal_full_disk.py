"""A log that cannot be emptied into calls.db because the disk is full is said as such.

e96a6c0's line for a log past WAL_WARN_BYTES that a checkpoint cannot empty (no reader
holding it) blamed calls.db whatever the checkpoint's error: on a full disk (a 6 MB log of
pages past calls.db's end, a tmpfs of 20 MB filled) it said 'cannot be emptied into calls.db
(database or disk is full): that file takes no writes (made immutable: lsattr; a failing
disk: dmesg). Nothing is lost meanwhile (the log holds every write), but it fills the
disk': the wrong file to look at, and writes that need space were failing then.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.storage import sqlite as sqlite_store
from common.storage.sqlite import SqliteCallStore


@contextlib.contextmanager
def small_disk(where: Path) -> Iterator[Path]:
    """A 20 MB tmpfs at `where` (root only)."""
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(where)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a small file system here ({type(exc).__name__})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


def fill(disk: Path) -> None:
    with (disk / "filler").open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(65536))
            f.flush()


async def test_a_log_that_a_full_disk_keeps_out_of_calls_db_says_the_disk_is_full(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "WAL_WARN_BYTES", 2 * 1024 * 1024)
    with small_disk(tmp_path / "disk") as disk:
        db = await SqliteCallStore.open(disk / "calls.db")
        other = sqlite3.connect(disk / "calls.db", isolation_level=None)
        try:
            # 6 MB of log, pages past calls.db's end: its checkpoint needs calls.db to grow.
            other.execute("PRAGMA wal_autocheckpoint=0")
            other.execute("CREATE TABLE filler (x BLOB)")
            other.execute("BEGIN")
            for _ in range(600):
                other.execute("INSERT INTO filler VALUES (zeroblob(10000))")
            other.execute("COMMIT")
            fill(disk)
            size = (disk / "calls.db-wal").stat().st_size
            await db._submit(db._watch_wal_size, size)
        finally:
            other.close()
            (disk / "filler").unlink(missing_ok=True)
            await db.close()
    said = [r.getMessage() for r in caplog.records if "-wal is" in r.getMessage()]
    assert len(said) == 1, said
    assert "database or disk is full" in said[0]
    assert "lsattr" not in said[0]
    assert "Nothing is lost" not in said[0]
    assert f"df -h {disk}" in said[0]
