"""calls.db that stops taking writes while its log still does: the log's growth is said
with why, not taken for a reader's snapshot, and it shrinks once calls.db takes writes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from common.storage import sqlite as sqlite_store
from tests.conftest import AppFactory
from tests.helpers import immutable

CALL = {"phone_number": "+14155557701", "name": "Ann"}


def _store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "common.storage.sqlite"]


async def test_a_log_that_cannot_be_emptied_into_an_immutable_database_is_said(
    start_app: AppFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen live: calls.db made immutable under a running server (calls.db-wal still
    writable): every call answered 200 while the log grew 55 MB in 8 s, SQLite's own
    checkpoints failing unsaid, until the disk was full and only 'database or disk is
    full' was said. Now the log's growth past WAL_WARN_BYTES says the checkpoint's error."""
    caplog.set_level(logging.INFO, logger="common.storage.sqlite")
    monkeypatch.setattr(sqlite_store, "WAL_WARN_BYTES", 2 * 1024 * 1024)
    monkeypatch.setattr(sqlite_store, "WAL_KEEP_BYTES", 1024 * 1024)
    client = await start_app(sandbox_time_scale=0.01, calls_rate_limit_per_min=100_000)
    assert (await client.post("/calls/outbound", json=CALL)).status == 200
    wal = tmp_path / "calls.db-wal"
    with immutable(tmp_path / "calls.db"):
        for _ in range(300):
            if any("cannot be emptied" in m for m in _store_lines(caplog)):
                break
            assert (await client.post("/calls/outbound", json=CALL)).status == 200
            await asyncio.sleep(0.02)
        said = [m for m in _store_lines(caplog) if "-wal is" in m]
        assert len(said) == 1, said
        assert "cannot be emptied into calls.db (disk I/O error)" in said[0]
        assert "held by" not in said[0]  # no reader's snapshot to blame
        grown = wal.stat().st_size
    for _ in range(300):  # calls.db takes writes again: emptied, then cut back
        if any("is back" in m for m in _store_lines(caplog)):
            break
        assert (await client.post("/calls/outbound", json=CALL)).status == 200
        await asyncio.sleep(0.02)
    assert wal.stat().st_size <= sqlite_store.WAL_KEEP_BYTES < grown
