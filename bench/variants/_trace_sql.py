"""Not a variant: bench.statements' tracer, executed first as a patch is (bench.compare's
launcher). Every SQLite connection the server opens traces its statements (sqlite3's trace
callback), each counted under its thread and the transaction program running it
(common.storage.sqlite._drive), or "-" for the transactions' own BEGIN, SAVEPOINT, RELEASE,
ROLLBACK and COMMIT; each write transaction of the database thread is counted too, by the
programs it ran. SIGUSR1 writes the counts so far to $BENCH_TRACE_OUT (JSON)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
from collections import Counter
from types import FrameType
from typing import Any

from bench.variants._check import require
from common.storage import sqlite as store
from common.storage.programs import Program

require(store, "_drive")

WRITER = "calls-db"  # the database thread's name (common/storage/sqlite.py)
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b")
_lock = threading.Lock()
_statements: Counter[tuple[str, str, str]] = Counter()
_transactions: Counter[str] = Counter()
_running: list[str] = []  # the programs of the database thread's open transaction
_local = threading.local()


def _shape(sql: str) -> str:
    """The statement with its values taken out (the callback gets them bound)."""
    shape = re.sub(r"\?(\s*,\s*\?)+", "?...", _LITERAL.sub("?", sql))
    return " ".join(shape.split())


def _traced(sql: str) -> None:
    thread = threading.current_thread().name
    with _lock:
        _statements[(thread, getattr(_local, "program", "-"), _shape(sql))] += 1
        if thread != WRITER:
            return
        if sql.startswith("BEGIN"):
            _running.clear()
        elif sql in ("COMMIT", "ROLLBACK"):
            _transactions["+".join(_running) + ("" if sql == "COMMIT" else " (rolled back)")] += 1
            _running.clear()


_connect = sqlite3.connect
_drive = store._drive


def _connect_traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    conn: sqlite3.Connection = _connect(*args, **kwargs)
    conn.set_trace_callback(_traced)
    return conn


def _drive_named(conn: sqlite3.Connection, program: Program[Any]) -> Any:
    name = getattr(program, "__name__", "?")
    before = getattr(_local, "program", "-")
    _local.program = name
    if threading.current_thread().name == WRITER:
        with _lock:
            _running.append(name)
    try:
        return _drive(conn, program)
    finally:
        _local.program = before


def _write_counts(_signum: int, _frame: FrameType | None) -> None:
    path = os.environ["BENCH_TRACE_OUT"]
    with _lock:
        doc = {
            "statements": [[*key, n] for key, n in _statements.items()],
            "transactions": dict(_transactions),
        }
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    os.replace(path + ".tmp", path)


sqlite3.connect = _connect_traced  # type: ignore[assignment]
store._drive = _drive_named
signal.signal(signal.SIGUSR1, _write_counts)
