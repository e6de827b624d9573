"""The claims and the look for what is due next read only deliveries that could go: not the
later events waiting behind their call's first one (probe IG: a receiver down for hours,
20,000 calls' later events waiting behind their first one's retry, made each claim and each
look read 80,000 rows, 0.3 s each, and every call placed waited 1.6 s instead of 0.15 s; the
look for the first claim to run out read every pending delivery too, 0.1 s)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from common.calls.models import DeliveryOutcome
from common.storage import programs
from common.storage.sqlite import SqliteCallStore

URL = "https://hooks.example.com/calls"


def drive(db: sqlite3.Connection, program: Generator[Any, Any, Any]) -> Any:
    """Run a storage program's queries on `db`, as the store does, and return its result."""
    try:
        query = next(program)
        while True:
            query = program.send(db.execute(query.sql, query.args).fetchall())
    except StopIteration as stop:
        return stop.value


def steps(db: sqlite3.Connection, program: Generator[Any, Any, Any]) -> int:
    """The SQLite VM steps (in hundreds) its queries take."""
    counted = [0]

    def count() -> int:
        counted[0] += 1
        return 0

    db.set_progress_handler(count, 100)
    try:
        drive(db, program)
    finally:
        db.set_progress_handler(None, 100)
    return counted[0]


async def open_db(path: Path) -> sqlite3.Connection:
    store = await SqliteCallStore.open(path)
    await store.close()
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    return db


def add_calls(db: sqlite3.Connection, first: int, count: int, now: float) -> None:
    """`count` calls, each with its first event's delivery retrying an hour from now and two
    later events waiting behind it."""
    for n in range(first, first + count):
        for k in range(3):
            drive(db, programs.add_delivery(programs.SQLITE, n * 3 + k, f"call-{n}", URL, now))
        db.execute(
            "UPDATE deliveries SET attempts = 1, next_attempt_at = ? WHERE id = (SELECT MIN(id)"
            " FROM deliveries WHERE call_id = ?)",
            (now + 3600, f"call-{n}"),
        )


async def test_a_backlog_waiting_behind_retries_is_not_read_by_each_claim(tmp_path: Path) -> None:
    now = time.time()
    with contextlib.closing(await open_db(tmp_path / "calls.db")) as db:
        add_calls(db, 0, 20, now - 60)
        claim = programs.claim_due_deliveries(programs.SQLITE, now, 60, 50)
        small = (steps(db, claim), steps(db, programs.next_delivery_at(programs.SQLITE, now)))
        add_calls(db, 20, 400, now - 60)
        claim = programs.claim_due_deliveries(programs.SQLITE, now, 60, 50)
        large = (steps(db, claim), steps(db, programs.next_delivery_at(programs.SQLITE, now)))
        # Reading every waiting delivery, 20 times the calls cost ~20 times the steps.
        assert large[0] <= 3 * small[0] + 5, (small, large)
        assert large[1] <= 3 * small[1] + 5, (small, large)


async def test_the_next_delivery_goes_once_the_one_before_it_is_over(tmp_path: Path) -> None:
    now = time.time()
    with contextlib.closing(await open_db(tmp_path / "calls.db")) as db:
        for k in range(3):
            drive(db, programs.add_delivery(programs.SQLITE, k, "call-a", URL, now))
        claimed = drive(db, programs.claim_due_deliveries(programs.SQLITE, now, 60, 10))
        assert [d.event_id for d in claimed] == [0]
        delivered = DeliveryOutcome("delivered", 204)
        drive(db, programs.record_delivery(programs.SQLITE, claimed[0].id, delivered, now))
        claimed = drive(db, programs.claim_due_deliveries(programs.SQLITE, now, 60, 10))
        assert [d.event_id for d in claimed] == [1]
        # Redelivered, the first goes before the third (the second is in flight).
        drive(db, programs.redeliver(programs.SQLITE, 1, now))
        drive(db, programs.record_delivery(programs.SQLITE, claimed[0].id, delivered, now))
        claimed = drive(db, programs.claim_due_deliveries(programs.SQLITE, now, 60, 10))
        assert [d.event_id for d in claimed] == [0]
        # One left behind one that is over (recorded by an earlier release) is freed.
        drive(db, programs.record_delivery(programs.SQLITE, claimed[0].id, delivered, now))
        db.execute("UPDATE deliveries SET behind = 1 WHERE event_id = 2")
        assert drive(db, programs.free_behind(programs.SQLITE)) == 1
        claimed = drive(db, programs.claim_due_deliveries(programs.SQLITE, now, 60, 10))
        assert [d.event_id for d in claimed] == [2]
