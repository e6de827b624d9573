"""Variant: SQLite commits not synced (synchronous=NORMAL in WAL mode), as before the server
synced every commit (a loss of the machine then lost the calls since the last checkpoint):
what that durability costs a call, measured next to it."""

from __future__ import annotations

import sqlite3

from bench.variants._check import require
from common.storage import sqlite

require(sqlite.SqliteCallStore, "_prepare")
_prepare = sqlite.SqliteCallStore._prepare


def _prepare_normal(self: sqlite.SqliteCallStore, conn: sqlite3.Connection) -> None:
    _prepare(self, conn)
    conn.execute("PRAGMA synchronous=NORMAL")


sqlite.SqliteCallStore._prepare = _prepare_normal  # type: ignore[method-assign]
