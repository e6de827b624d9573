"""One durable per-call config write through `update_config_async`, against two baselines.

(a) the physical floor: write + fsync + rename (+ fsync of the directory, which makes the rename
    itself durable) of the same bytes, with no locking and no event loop;
(b) the seed's naive approach: `json.dump(doc, f, indent=2)` in place under a
    `threading.Lock`, no fsync (not durable, not atomic).

Then the cost with 10 vs 10,000 finished calls in history, with 10 vs 500 live calls, and the
throughput of 1, 4 and 8 writer processes sharing one config.json.

    python -m bench.config_write [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import (
    PYTHON,
    ROOT,
    Goal,
    Spread,
    emit,
    note,
    section,
    subprocess_env,
    table,
    workdir,
)
from common.update_config import configure_store, update_config_async

INSTRUCTIONS = (
    "You are a friendly assistant calling on behalf of Acme Dental to confirm tomorrow's "
    "appointment. Greet the patient by name, confirm the date and time, offer to reschedule "
    "if it does not suit them, and answer short questions about the clinic's address and "
    "parking. Never discuss prices or medical advice; offer a call back from the front desk "
    "instead. Keep every answer short and polite, and end the call once everything is clear."
)
CALL: dict[str, Any] = {
    "caller_name": "Alice Example",
    "agent_instructions": INSTRUCTIONS,
    "tts_language": "es",
    "tts_emotion": "Friendly",
    "additional_params": {
        "customer_tier": "Premium",
        "campaign_id": "SUMMER2024",
        "appointment": {"date": "2025-07-01", "time": "10:30"},
    },
}
BATCH = 100  # records written per group commit when filling a store


@dataclass(frozen=True)
class Plan:
    repeats: int
    writes: int  # timed writes per case per repeat
    history: int  # finished calls in the "long history" store
    many_live: int
    throughput_repeats: int
    throughput_s: float


FULL = Plan(
    repeats=5, writes=100, history=10_000, many_live=500, throughput_repeats=3, throughput_s=1.0
)
QUICK = Plan(
    repeats=3, writes=40, history=2_000, many_live=500, throughput_repeats=2, throughput_s=0.6
)


# ------------------------------------------------------------------------------ baselines


def floor_write(path: Path, data: bytes) -> None:
    """(a) The least a durable replace of config.json can cost."""
    tmp = path.with_name(path.name + ".floor-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


_NAIVE_LOCK = threading.Lock()


def naive_write(path: Path, doc: dict[str, Any]) -> None:
    """(b) The seed's way: dump in place under a lock; a crash can leave a torn file."""
    with _NAIVE_LOCK, path.open("w") as fh:
        json.dump(doc, fh, indent=2)


def timed(fn: Callable[[], None], n: int) -> float:
    """Median seconds of n calls."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ------------------------------------------------------------------------------ the store


async def fill(path: Path, live: int, finished: int) -> None:
    """`live` calls left in config.json, after `finished` others came and went."""
    store = configure_store(path)
    for first in range(0, finished, BATCH):
        ids = [f"call-done{i:08d}" for i in range(first, min(first + BATCH, finished))]
        await asyncio.gather(*(store.update_async(**CALL, call_id=c) for c in ids))
        await asyncio.gather(*(store.remove_call_async(c) for c in ids))
    for first in range(0, live, BATCH):
        ids = [f"call-live{i:08d}" for i in range(first, min(first + BATCH, live))]
        await asyncio.gather(*(store.update_async(**CALL, call_id=c) for c in ids))


async def store_write_median(path: Path, live: int, n: int) -> float:
    """Median seconds of n sequential `update_config_async` calls (live count kept constant)."""
    configure_store(path)
    times = []
    for i in range(n):
        call_id = f"call-live{i % live:08d}"  # a new config for a live call: same file size
        started = time.perf_counter()
        await update_config_async(**CALL, call_id=call_id)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ------------------------------------------------------------------------------ throughput


async def writer(path: Path, seconds: float, ident: int, tasks: int) -> int:
    """Say "ready" once started, read the window's start (wall clock) from stdin, then write
    for `seconds` from it and count the writes finished in that window."""
    configure_store(path)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    await asyncio.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    done = 0

    async def one(k: int) -> None:
        nonlocal done
        i = 0
        while time.time() < end:
            call_id = f"call-tp{(ident * 3 + k + i) % 10:02d}"
            await update_config_async(**CALL, call_id=call_id)
            if time.time() <= end:
                done += 1
            i += 1

    await asyncio.gather(*(one(k) for k in range(tasks)))
    return done


def throughput(root: Path, processes: int, tasks: int, seconds: float) -> float:
    """Durable writes per second of `processes` processes x `tasks` concurrent writers."""
    path = root / f"tp-{processes}x{tasks}-{time.monotonic_ns()}" / "config.json"
    path.parent.mkdir()
    asyncio.run(fill(path, 10, 0))
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.config_write",
                "--writer",
                str(path),
                str(seconds),
                str(p),
                str(tasks),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
        )
        for p in range(processes)
    ]
    # The window opens once every writer has said it started: on a loaded machine an
    # interpreter can take seconds to import, and a fixed start left late writers counting 0.
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"writer process failed to start ({proc.wait()})")
    start_at = time.time() + 0.1
    counts = []
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start_at}\n")
        proc.stdin.flush()
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"writer process failed with {proc.returncode}")
        counts.append(int(out.strip()))
    return sum(counts) / seconds


# ------------------------------------------------------------------------------ the run


def run(plan: Plan) -> str:
    with workdir("config") as root:
        small, history, many = root / "small", root / "history", root / "many"
        for d in (small, history, many):
            d.mkdir()
        note(
            f"config_write: filling stores (10 live; 10 live + {plan.history:,} finished; "
            f"{plan.many_live} live)"
        )
        asyncio.run(fill(small / "config.json", 10, 10))
        asyncio.run(fill(history / "config.json", 10, plan.history))
        asyncio.run(fill(many / "config.json", plan.many_live, 0))

        rows: dict[str, list[float]] = {
            k: []
            for k in (
                "store10",
                "floor10",
                "naive10",
                "hist",
                "store500",
                "floor500",
                "naive500",
            )
        }
        for r in range(plan.repeats):
            note(f"config_write: repeat {r + 1}/{plan.repeats}")
            for label, d, live in (("10", small, 10), ("500", many, plan.many_live)):
                path = d / "config.json"
                rows[f"store{label}"].append(
                    asyncio.run(store_write_median(path, live, plan.writes))
                )
                data = path.read_bytes()
                doc = json.loads(data)
                rows[f"floor{label}"].append(
                    timed(functools.partial(floor_write, d / "floor.json", data), plan.writes)
                )
                rows[f"naive{label}"].append(
                    timed(functools.partial(naive_write, d / "naive.json", doc), plan.writes)
                )
            rows["hist"].append(
                asyncio.run(store_write_median(history / "config.json", 10, plan.writes))
            )
        size10 = (small / "config.json").stat().st_size
        size500 = (many / "config.json").stat().st_size
        hist_size = (history / "config.json").stat().st_size

        note("config_write: throughput of 1, 4 and 8 writer processes")
        tp: dict[str, list[float]] = {}
        configs = (
            ("1 process", 1, 1),
            ("4 processes", 4, 1),
            ("8 processes", 8, 1),
            ("1 process, 8 concurrent writers", 1, 8),
        )
        for _ in range(plan.throughput_repeats):
            for label, procs, tasks in configs:
                tp.setdefault(label, []).append(throughput(root, procs, tasks, plan.throughput_s))

    def ratios(a: str, b: str) -> Spread:
        return Spread.of([x / y for x, y in zip(rows[a], rows[b], strict=True)])

    def us(key: str) -> str:
        return Spread.of([v * 1e6 for v in rows[key]]).fmt(".0f")

    r_floor, r_naive = ratios("store10", "floor10"), ratios("store10", "naive10")
    r_hist, r_live = ratios("hist", "store10"), ratios("store500", "store10")
    slope = Spread.of(
        [
            (b - a) * 1e6 / (plan.many_live - 10)
            for a, b in zip(rows["store10"], rows["store500"], strict=True)
        ]
    )

    latency = table(
        [
            "config.json holds",
            "bytes",
            "update_config_async µs",
            "(a) floor µs",
            "(b) naive µs",
            "vs (a)",
            "vs (b)",
        ],
        [
            [
                "10 live calls (10 finished)",
                f"{size10:,}",
                us("store10"),
                us("floor10"),
                us("naive10"),
                r_floor.fmt(),
                r_naive.fmt(),
            ],
            [
                f"10 live calls ({plan.history:,} finished)",
                f"{hist_size:,}",
                us("hist"),
                "",
                "",
                "",
                "",
            ],
            [
                f"{plan.many_live} live calls",
                f"{size500:,}",
                us("store500"),
                us("floor500"),
                us("naive500"),
                ratios("store500", "floor500").fmt(),
                ratios("store500", "naive500").fmt(),
            ],
        ],
    )
    side = table(
        ["comparison", "ratio (min / median / max)", "goal"],
        [
            ["10 live: update_config_async / (a) floor", r_floor.fmt(), "<= 1.5"],
            ["10 live: update_config_async / (b) naive", r_naive.fmt(), "<= 3"],
            [f"{plan.history:,} / 10 finished calls in history", r_hist.fmt(), "<= 1.1"],
            [f"{plan.many_live} / 10 live calls", r_live.fmt(), "report"],
            ["slope: µs per extra live call", slope.fmt(".2f"), "report"],
        ],
    )
    one = Spread.of(tp["1 process"])
    floor_rate = 1.0 / statistics.median(rows["floor10"])
    tp_rows = []
    for label, _, _ in configs:
        vals = tp[label]
        tp_rows.append(
            [
                label,
                Spread.of(vals).fmt(".0f"),
                Spread.of([v / o for v, o in zip(vals, tp["1 process"], strict=True)]).fmt(),
                f"{statistics.median(vals) / floor_rate:.2f}",
            ]
        )
    tp_table = table(
        [
            "writers (10 live calls)",
            "durable writes/s (min / median / max)",
            "vs 1 process",
            "vs floor rate",
        ],
        tp_rows,
    )
    goals = [
        Goal("update_config_async / floor (a)", r_floor.mid, 1.5, "<=", "x", r_floor),
        Goal("update_config_async / naive (b)", r_naive.mid, 3.0, "<=", "x", r_naive),
        Goal(f"{plan.history:,} / 10 finished calls", r_hist.mid, 1.1, "<=", "x", r_hist),
    ]
    return section(
        "Config writes (bench/config_write.py)",
        [
            f"One durable write through `update_config_async` ({plan.writes} sequential writes "
            f"per case per repeat, median of each; {plan.repeats} repeats, min / median / max "
            "over repeats). (a) = write + fsync + rename + fsync(dir) of the same bytes, no "
            "locking; (b) = `json.dump(indent=2)` in place under a `threading.Lock`, no fsync.",
            "",
            latency,
            "",
            side,
            "",
            f"Throughput: every writer rewrites one of the same 10 live calls for "
            f"{plan.throughput_s:g} s ({plan.throughput_repeats} repeats). Floor rate = "
            f"1 / median (a) = {floor_rate:,.0f} writes/s; one process, {one.mid:,.0f}/s.",
            "",
            tp_table,
            "",
            *(g.line() for g in goals),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--writer", nargs=4, metavar=("PATH", "S", "ID", "TASKS"))
    args = parser.parse_args()
    if args.writer:
        path, seconds, ident, tasks = args.writer
        done = asyncio.run(writer(Path(path), float(seconds), int(ident), int(tasks)))
        print(done)
        return
    emit(run(QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
