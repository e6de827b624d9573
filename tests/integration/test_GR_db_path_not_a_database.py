"""CALLS_DB_PATH naming a file that is no database is refused, and not first said to hold calls.

`CALLS_DB_PATH=notes.txt` (or /etc/hosts, a path set to the wrong variable) stopped start-up
with `file is not a database`, as it should; but a WARNING before it said that file "holds
names, numbers, instructions and transcripts: chmod o-rwx it", sending the operator to close up
a file of theirs, or of the system's, that holds none of them.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from server import warn_open_files
from tests.processes import free_port, reachable_directory, run_to_end

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A directory other users may pass through (pytest's tmp_path is under a 0700 one)."""
    with reachable_directory() as path:
        yield path


def run_server(where: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": "/usr/bin:/bin", "PORT": str(free_port()), "SANDBOX_PORT": "0", **env}
    return run_to_end([sys.executable, str(ROOT / "server.py")], where, environ, timeout=30)


def test_the_server_refuses_a_text_file_without_calling_it_the_database(
    open_tmp_path: Path,
) -> None:
    notes = open_tmp_path / "notes.txt"
    notes.write_text("nameserver 10.0.0.1\n")
    notes.chmod(0o644)
    done = run_server(open_tmp_path, CALLS_DB_PATH="notes.txt")
    assert done.returncode == 2, done.stderr
    assert "cannot be used: file is not a database" in done.stderr
    assert "notes.txt (mode 0644)" not in done.stderr, done.stderr
    assert "chmod o-rwx" not in done.stderr, done.stderr
    assert notes.read_text() == "nameserver 10.0.0.1\n"


@pytest.mark.parametrize("content", ["database", "empty"])
def test_a_database_or_an_empty_file_every_user_may_read_is_still_warned_of(
    open_tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    """An empty file is one SQLite makes its database of: it will hold the calls."""
    db = open_tmp_path / "calls.db"
    if content == "database":
        with sqlite3.connect(db) as made:
            made.execute("CREATE TABLE t (x)")
        made.close()
    else:
        db.write_bytes(b"")
    db.chmod(0o644)
    settings = dataclasses.replace(
        Settings(), config_path=open_tmp_path / "config.json", calls_db_path=db
    )
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_open_files(settings)
    assert [r.getMessage() for r in caplog.records] == [
        f"{db} (mode 0644) may be read by every user of this machine; it holds names, numbers,"
        " instructions and transcripts: chmod o-rwx it"
    ]
