"""A server moved from SQLite to PostgreSQL (DATABASE_URL set, as "Running more than one
server" says) with its calls.db still there starts on an empty database, and said nothing:
the numbers on calls.db's do-not-call list were called again. Now a WARNING says calls.db is
not read, how many calls and do-not-call numbers it holds, and what to do about the list."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from pathlib import Path

import pytest

from common.settings import Settings
from common.storage.sqlite import SqliteCallStore, rows_held
from server import warn_sqlite_left_behind

PG = "postgresql://calls@127.0.0.1:5433/calls"


def _database_with_a_listed_number(path: Path) -> None:
    async def make() -> None:
        store = await SqliteCallStore.open(path)
        try:
            await store.add_dnc(["+14155550100", "+14155550101"], source="api", call_id=None)
        finally:
            await store.close()

    asyncio.run(make())


def test_a_calls_db_left_behind_by_database_url_is_said_with_what_it_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.db"
    _database_with_a_listed_number(path)
    before = sorted(os.listdir(tmp_path))
    settings = dataclasses.replace(Settings(), database_url=PG, calls_db_path=path)

    with caplog.at_level(logging.WARNING):
        warn_sqlite_left_behind(settings)

    assert caplog.messages == [
        f"DATABASE_URL is set, so the SQLite calls database {path} (CALLS_DB_PATH) is not"
        " read: its 0 call(s) and 2 do-not-call number(s) are not in PostgreSQL, and nothing"
        " moves them; put its numbers on PostgreSQL's list (POST /dnc) before calling, or"
        " move calls.db aside once you have"
    ]
    assert sorted(os.listdir(tmp_path)) == before  # read without a -wal or -shm made


def test_nothing_is_said_without_database_url_or_without_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.db"
    with caplog.at_level(logging.WARNING):
        # not the default `calls.db`: the checkout's, after a `make run` there, holds calls
        warn_sqlite_left_behind(
            dataclasses.replace(Settings(), database_url=PG, calls_db_path=path)
        )
        warn_sqlite_left_behind(dataclasses.replace(Settings(), calls_db_path=path))

    assert caplog.messages == []
    assert rows_held(path) is None
