"""A write that fails at the process's file size limit says so.

Found running the server under `ulimit -f`: once calls.db reached the limit, every call got
503 and the log and /readyz said only `disk I/O error`, which sends the operator to a disk
that is fine. The error now names the file at the limit and how to raise it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.storage.base import DatabaseError
from common.storage.sqlite import SqliteCallStore, _at_size_limit
from tests.helpers import files_capped_at


async def test_a_write_stopped_by_the_file_size_limit_names_it(tmp_path: Path) -> None:
    db = await SqliteCallStore.open(tmp_path / "calls.db")
    try:
        await db.probe_write("one")
        files = [tmp_path / "calls.db", tmp_path / "calls.db-wal"]
        limit = max(f.stat().st_size for f in files) + 16 * 1024
        with files_capped_at(limit), pytest.raises(DatabaseError) as caught:
            # The probe after a failed write writes as much as a call's (256 KiB).
            db._disk_failure = True
            await db.probe_write("one")
        said = str(caught.value)
        # The log it failed to grow, though it was emptied since (calls.db took its pages).
        assert "calls.db-wal reached this process's file size limit" in said, said
        assert f"({limit} bytes" in said, said
        assert "ulimit -f" in said, said
        await db.probe_write("one")  # the limit gone, writes are taken again
    finally:
        await db.close()


def test_a_calls_db_at_the_limit_is_named_beside_a_log_at_it_too(tmp_path: Path) -> None:
    """Both files at the limit (seen under `ulimit -f 1250`: 1280000 bytes each): the log
    cannot be emptied into calls.db, so no write is taken until a restart; the hint named the
    log and said writes would go on."""
    limit = 1_280_000
    path = tmp_path / "calls.db"
    for name in (path, tmp_path / "calls.db-wal"):
        with open(name, "wb") as file:
            file.truncate(limit)
    with files_capped_at(limit):
        said = _at_size_limit(path)
    assert said is not None
    assert said.startswith("calls.db reached this process's file size limit"), said
    assert "no write that grows it succeeds until the limit is raised" in said, said
