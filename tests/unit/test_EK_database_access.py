"""A calls database this user may not write (another user's calls.db, left by a server run as
root; a directory it may not create files in) stops start-up saying so, and not by sending
the operator to another CALLS_DB_PATH: that is a new, empty database, without the calls, the
do-not-call list or the Idempotency-Keys of the one that is there."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from common.storage.base import DatabaseAccessDenied, DatabaseError
from common.storage.sqlite import SqliteCallStore, access_problem
from server import _unusable_database
from tests.processes import NOBODY, forked_as_nobody, reachable_directory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


@pytest.fixture
def directory() -> Iterator[Path]:
    with reachable_directory("ek-db-access-") as made:
        yield made


def _made_by_root(path: Path) -> None:
    """calls.db as a server run as root leaves it (stopped cleanly: no -wal, no -shm)."""

    async def make() -> None:
        store = await SqliteCallStore.open(path)
        await store.close()

    asyncio.run(make())


def _opened_as_nobody(path: Path, *, migrate: bool = True) -> str:
    """What opening `path` and taking a write (the server's start-up) raises, as `nobody`:
    `<class name>: <message>`, or "opened". Not `migrate`: opened as a tool that only reads
    (`agent describe`), without a write."""

    async def start() -> str:
        store = await SqliteCallStore.open(path, migrate=migrate)
        try:
            if migrate:
                await store.probe_write("ek")
        finally:
            await store.close()
        return "opened"

    def opened() -> str:
        try:
            return asyncio.run(start())
        except DatabaseError as exc:
            return f"{type(exc).__name__}: {exc}"

    return forked_as_nobody(opened)


def test_another_users_database_is_named_with_its_owner_and_mode(directory: Path) -> None:
    path = directory / "calls.db"
    _made_by_root(path)
    path.chmod(0o644)  # readable by nobody, not writable: SQLite opens it read-only
    os.chown(directory, NOBODY, NOBODY)  # the directory is not what is wrong

    said = _opened_as_nobody(path)

    # Was "DatabaseError: attempt to write a readonly database", and the server added "set
    # CALLS_DB_PATH to a file this server can create and write": a new, empty database.
    assert said.startswith("DatabaseAccessDenied: calls.db may not be written by"), said
    assert "(nobody)" in said and "root's, mode 0644" in said, said
    assert "chown" in said and "new, empty database" in said, said


def test_a_tool_that_only_reads_is_told_it_may_not_read_not_to_take_the_files(
    directory: Path,
) -> None:
    path = directory / "calls.db"
    _made_by_root(path)  # 0600, root's

    said = _opened_as_nobody(path, migrate=False)

    # Was "unable to open database file"; the server's advice (chown the files to this
    # user) would take the database from the server that writes it.
    assert said == (
        "DatabaseAccessDenied: calls.db may not be read by this user (nobody): it is root's,"
        " mode 0600"
    )


def test_a_directory_it_may_not_write_is_named_not_the_file(directory: Path) -> None:
    path = directory / "calls.db"
    _made_by_root(path)
    os.chown(path, NOBODY, NOBODY)  # calls.db is nobody's, 0600; its directory root's
    said = _opened_as_nobody(path)

    # Was "attempt to write a readonly database" of a file its user may write.
    assert said.startswith("DatabaseAccessDenied: this user (nobody) may not create files in"), said
    assert "calls.db-wal" in said, said


def test_a_new_database_in_a_directory_it_may_not_write(directory: Path) -> None:
    said = _opened_as_nobody(directory / "calls.db")

    # Was "Permission denied": here another CALLS_DB_PATH is the way (nothing to lose).
    assert said.startswith("DatabaseAccessDenied: this user (nobody) may not create files in"), said
    assert "set CALLS_DB_PATH" in said and "chown" not in said, said


def test_the_start_up_line_names_the_setting_and_keeps_the_advice(directory: Path) -> None:
    path = directory / "calls.db"
    exc = DatabaseAccessDenied("calls.db may not be written by this user: chown it")
    line = _unusable_database(dataclasses.replace(Settings(), calls_db_path=path), exc)

    assert line == (
        f"the calls database (CALLS_DB_PATH={path}) cannot be used:"
        " calls.db may not be written by this user: chown it"
    )


def test_a_database_this_user_may_use_has_no_access_problem(directory: Path) -> None:
    path = directory / "calls.db"
    _made_by_root(path)

    assert access_problem(path) is None
    assert access_problem(directory / "new.db") is None
