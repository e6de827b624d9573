"""The server's garbage collection per call: its thresholds next to Python's default.

    python -m bench.gc_cost            # about 3 minutes here
    python -m bench.gc_cost --quick    # about 1.5

Both servers run side by side as bench.compare runs its variants (sandbox in its own
process, the same calls, interleaved repeats), each with bench/variants/gc_timed.py, which
times every collection on its thread's CPU clock; `default_gc` also has Python's default
thresholds (700, 10, 10). A collection's CPU is counted wherever the loop or a thread was
when it ran: under load it is spread over every line that allocates, and no profile shows it
as one thing. Printed per placed and settled call: collections by generation, their CPU, the
longest one, and the server's whole CPU (for the share).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import compare
from bench.compare import CURRENT, FULL, QUICK, VARIANTS_DIR, Variant
from bench.harness import emit, machine, note, quick_main, table

DEFAULT = "default_gc"
PATCHES = {CURRENT: "gc_timed.py", DEFAULT: "gc_timed_default.py"}
LINE_WAIT_S = 10.0


@dataclass(frozen=True)
class GcSample:
    counts: tuple[int, ...]  # collections per generation (0, 1, 2), in the measurement
    seconds: tuple[float, ...]
    longest_ms: float
    calls: int
    server_cpu_ms: float  # per call

    @property
    def gc_ms(self) -> float:
        return sum(self.seconds) * 1000 / self.calls


def _totals(out: Path, pid: int) -> dict[str, Any]:
    """Ask the server for its totals (SIGUSR1) and read the line it writes."""
    before = out.read_text().count("\n") if out.exists() else 0
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + LINE_WAIT_S
    while time.monotonic() < deadline:
        lines = out.read_text().splitlines() if out.exists() else []
        if len(lines) > before:
            return dict(json.loads(lines[before]))
        time.sleep(0.02)
    raise compare.Failed(f"no GC totals in {out} within {LINE_WAIT_S:.0f} s")


def sample(pair: compare.Pair, clients: int, plan: compare.Plan) -> GcSample:
    out = pair.workdir / "gc.jsonl"
    first = _totals(out, pair.server.pid)
    cpu = compare.CpuMark.take(pair.server.pid)
    result = compare.place(pair, clients, plan.calls[clients], compare.SETTLED_NUMBER)
    compare.wait_live(pair, 0, compare.SETTLE_TIMEOUT_S)
    time.sleep(compare.TRAIL_S)
    server_s = cpu.seconds()
    last = _totals(out, pair.server.pid)
    n = max(result.ok, 1)
    counts = tuple(b - a for a, b in zip(first["counts"], last["counts"], strict=True))
    seconds = tuple(b - a for a, b in zip(first["seconds"], last["seconds"], strict=True))
    return GcSample(counts, seconds, last["longest"] * 1000, n, server_s * 1000 / n)


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(samples: dict[int, dict[str, list[GcSample]]], plan: compare.Plan, took: float) -> str:
    rows = []
    for c in plan.clients:
        by = samples.get(c, {})
        ref = _med([s.gc_ms for s in by.get(DEFAULT, [])])
        for label in (DEFAULT, CURRENT):
            ss = by.get(label, [])
            if not ss:
                continue
            per_call = [
                "/".join(f"{_med([s.counts[g] / s.calls for s in ss]):.2f}" for g in range(3))
            ]
            gc_ms = _med([s.gc_ms for s in ss])
            cpu = _med([s.server_cpu_ms for s in ss])
            rows.append(
                [
                    f"{c}",
                    label,
                    *per_call,
                    f"{gc_ms:.3f}",
                    f"{gc_ms / ref:.3f}" if ref > 0 else "-",
                    f"{max(s.longest_ms for s in ss):.1f}",
                    f"{cpu:.2f}",
                    f"{100 * gc_ms / cpu:.1f}%",
                ]
            )
    heads = [
        "clients",
        "thresholds",
        "collections per call (gen 0/1/2)",
        "GC CPU ms per call",
        f"vs {DEFAULT}",
        "longest collection ms",
        "server CPU ms per call",
        "GC share",
    ]
    return "\n".join(
        [
            "## Garbage collection per call (bench/gc_cost.py)",
            "",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()};"
            f" took {took:.0f} s",
            f"- {plan.repeats} repeats, interleaved; medians over the repeats (the longest"
            " collection: over all of them). `current`: the server's thresholds"
            f" (7,000, 10, 10); `{DEFAULT}`: Python's (700, 10, 10).",
            "",
            table(heads, rows),
            "",
        ]
    )


def run(quick: bool) -> int:
    plan = QUICK if quick else FULL
    started = time.monotonic()
    samples: dict[int, dict[str, list[GcSample]]] = {}
    pairs: list[compare.Pair] = []
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gc-")))
        tree = root / "current-tree"
        what = compare.snapshot(tree)
        note(f"current = {what}")
        try:
            for i, (label, patch) in enumerate(PATCHES.items()):
                variant = Variant(label, tree, what, VARIANTS_DIR / patch)
                workdir = root / f"gc-{i}"
                pair = compare.start_pair(
                    variant, tree, workdir, time_scale=0.0, BENCH_GC_OUT=str(workdir / "gc.jsonl")
                )
                pairs.append(pair)
                compare.place(pair, 10, plan.warmup, compare.SETTLED_NUMBER)
                compare.wait_live(pair, 0, compare.SETTLE_TIMEOUT_S)
            for r in range(plan.repeats):
                for c in plan.clients:
                    for pair in compare.rotated(pairs, r):
                        measured = pair.variant.label
                        note(f"gc: repeat {r + 1}/{plan.repeats}, {c} clients, {measured}")
                        got = sample(pair, c, plan)
                        samples.setdefault(c, {}).setdefault(measured, []).append(got)
        finally:
            for pair in pairs:
                pair.stop()
    emit(report(samples, plan, time.monotonic() - started))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    quick_main("gc_cost", __doc__, run, argv)


if __name__ == "__main__":
    main()
