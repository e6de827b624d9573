"""CALLS_DB_PATH under a file that is no directory (`notes/calls.db` with `notes` a file)
stops start-up naming that file: "cannot create notes: File exists" read as a contradiction
(it could not be created because it was there?)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.storage.base import DatabaseError
from common.storage.sqlite import SqliteCallStore


@pytest.mark.parametrize("below", ["calls.db", "sub/calls.db"])
def test_a_file_where_its_directory_goes_is_named(tmp_path: Path, below: str) -> None:
    (tmp_path / "notes").write_text("not a directory")
    path = tmp_path / "notes" / below

    with pytest.raises(DatabaseError) as refused:
        asyncio.run(SqliteCallStore.open(path))

    assert str(refused.value) == (
        f"cannot create {path.parent}: {tmp_path / 'notes'} is a file, not a directory"
    )
