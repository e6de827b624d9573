"""Variant: the SQLite worker thread hands back each result with its own call_soon_threadsafe.

`_Worker._serve` normally runs every queued call per wake-up (neighbouring writes in one
transaction) and hands the whole batch's results back to their loop in one
`call_soon_threadsafe` (one wake-up of the loop per batch). Here it still runs all queued calls
per wake-up, in order, but each write in a transaction of its own, and wakes the loop once per
result.
"""

from __future__ import annotations

from bench.variants._check import require
from common.storage import sqlite

require(sqlite._Worker, "_serve", "submit", "shutdown")
require(sqlite, "_deliver")


def _serve_unbatched(self: sqlite._Worker) -> None:
    while True:
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            if not self._queue:
                return
            batch = list(self._queue)
            self._queue.clear()
        for call in batch:
            outcome: sqlite.Outcome
            try:
                outcome = (call, call.fn(*call.args), None)
            except BaseException as exc:  # handed to the caller, like an executor does
                outcome = (call, None, exc)
            outcomes: list[sqlite.Outcome] = [outcome]
            try:
                call.loop.call_soon_threadsafe(sqlite._deliver, outcomes)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


sqlite._Worker._serve = _serve_unbatched  # type: ignore[method-assign]
