"""Another process's checkpoint still copying the log into calls.db is no 'written over'.

Two servers started together on a calls.db of schema 10 (1 GB): the second wrote while the
first was still copying its migration's 64 MB of log into calls.db, whose index (calls.db-shm)
says how far a checkpoint got only once it ends (nBackfill; nBackfillAttempted is set as it
begins). The second read calls.db changed and the index not: CRITICAL 'calls.db was written
over under the running server (a copy onto it?)', and it refused every write (4 of 5 such
starts). Here the index is held at what it says mid-copy, around a real checkpoint."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock

MX_FRAME = slice(16, 20)  # the log index's header: frames in the log
N_BACKFILL = slice(96, 100)  # its checkpoint info: frames copied into calls.db, set at the end
N_BACKFILL_ATTEMPTED = slice(128, 132)  # frames the checkpoint under way copies, set first


def index_header(path: Path) -> bytes:
    with open(f"{path}-shm", "rb") as shm:
        return shm.read(136)


def set_index(path: Path, where: slice, value: bytes) -> None:
    fd = os.open(f"{path}-shm", os.O_WRONLY)
    try:
        os.pwrite(fd, value, where.start)
    finally:
        os.close(fd)


async def test_a_write_during_another_process_checkpoint_goes_through(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = await SqliteCallStore.open(path, FakeClock())
    other = sqlite3.connect(path, isolation_level=None)
    try:
        await store.add_dnc(["+14155550100"], "api")
        # The other process's writes, in the log only (no automatic checkpoint).
        other.execute("PRAGMA wal_autocheckpoint=0")
        other.execute("CREATE TABLE other_writes (data BLOB)")
        for _ in range(50):
            other.execute("INSERT INTO other_writes VALUES (zeroblob(4000))")
        # Its checkpoint begins: frames attempted, none copied yet; this server writes then.
        header = index_header(path)
        copied_before = header[N_BACKFILL]
        set_index(path, N_BACKFILL_ATTEMPTED, header[MX_FRAME])
        await store.add_dnc(["+14155550101"], "api")
        attempted = index_header(path)[N_BACKFILL_ATTEMPTED]
        # It copies the log into calls.db (a real checkpoint), its end not in the index yet.
        size = path.stat().st_size
        assert other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[0] == 0
        assert path.stat().st_size > size
        set_index(path, N_BACKFILL, copied_before)
        set_index(path, N_BACKFILL_ATTEMPTED, attempted)
        # This server's next write while it copies.
        assert await store.add_dnc(["+14155550102"], "api") == 1
    finally:
        other.close()
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM dnc").fetchone() == (3,)
    db.close()
