"""Measurement, not a fast path: the server's garbage collections timed, each one's CPU
(its thread's) and count by generation, written as one JSON line to $BENCH_GC_OUT on each
SIGUSR1 (totals since the start). bench/gc_cost.py reads them around its measurements."""

from __future__ import annotations

import gc
import json
import os
import signal
import time
from typing import Any

_started = [0.0]
_counts = [0, 0, 0]
_seconds = [0.0, 0.0, 0.0]
_longest = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.thread_time()
        return
    took = time.thread_time() - _started[0]
    generation = int(info["generation"])
    _counts[generation] += 1
    _seconds[generation] += took
    _longest[0] = max(_longest[0], took)


def _write(_signum: int, _frame: object) -> None:
    line = {"counts": _counts, "seconds": _seconds, "longest": _longest[0]}
    with open(os.environ["BENCH_GC_OUT"], "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")
    _longest[0] = 0.0  # the longest since the last line


gc.callbacks.append(_timed)
signal.signal(signal.SIGUSR1, _write)
