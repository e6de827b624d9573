"""`POST /calls/outbound` and signed webhook ingest through the real server, against hello-world.

The server under test is `server.py` in its own process with the embedded sandbox at time
scale 0: every call is simulated at once, in the same process, and its webhooks (room started,
participant joined, track published and unpublished, participant left, room finished) are
posted back to the same server, so they count against it. The baseline is a bare aiohttp
hello-world handler served the same way (`web.run_app`, same logging), measured in the same run
with the same load generator (`bench.loadgen`, its own process) at the same concurrency.

Requests/s is what the load generator saw; "settled/s" also waits until every placed call has
reached its final status (all its webhooks applied), which is the rate the server can sustain.
Server CPU per request comes from /proc, so it holds up better than rates on a noisy machine.

The goals (issue 17) are measured on the same calls with the sandbox in its own process (as a
real LiveKit would be), so the server pays only its own part. With `--memory`, the memory
benchmark (bench.memory) then continues on the same server.

    python -m bench.http [--quick] [--memory]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    Goal,
    LoadResult,
    Served,
    Spread,
    cpu_seconds,
    emit,
    http_post_json,
    note,
    num,
    percentile,
    rss_bytes,
    run_load,
    section,
    start_hello,
    start_server,
    start_split,
    table,
    wait_settled,
    workdir,
)
from bench.memory import CALL_BODY, JSON_HEADERS, Point, grow, point, report
from bench.memory import FULL as MEMORY_FULL
from bench.memory import QUICK as MEMORY_QUICK
from bench.memory import Plan as MemoryPlan
from common.settings import DEV_API_KEY, DEV_API_SECRET

CONCURRENCY = (1, 10, 50)
WEBHOOK_CALLS = 50  # calls the webhook events are about
WEBHOOK_NUMBER = "+14155550480"  # rings until the ringing timeout: the calls stay live
MAX_S = 30.0


@dataclass(frozen=True)
class Plan:
    repeats: int
    calls: dict[int, int]  # requests per measurement, by concurrency
    hello: dict[int, int]
    webhooks: dict[int, int]
    idle_calls: int  # calls placed one at a time, each once the one before it settled


FULL = Plan(
    repeats=3,
    calls={1: 300, 10: 500, 50: 800},
    hello={1: 2500, 10: 7000, 50: 8000},
    webhooks={1: 600, 10: 1500, 50: 2000},
    idle_calls=200,
)
QUICK = Plan(
    repeats=2,
    calls={1: 120, 10: 200, 50: 300},
    hello={1: 600, 10: 1500, 50: 2000},
    webhooks={1: 300, 10: 600, 50: 800},
    idle_calls=60,
)


@dataclass
class Sample:
    """One measurement of the server under test next to its hello-world baseline."""

    hello: LoadResult
    subject: LoadResult
    settled_rps: float
    cpu_ms: float  # server CPU per request (calls: including their simulation and webhooks)
    hello_cpu_ms: float
    sandbox_cpu_ms: float | None = None  # a sandbox in its own process, per call


@dataclass
class Series:
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    idle_ms: list[float] = field(default_factory=list)  # POST latency, server idle before each

    def add(self, concurrency: int, sample: Sample) -> None:
        self.samples.setdefault(concurrency, []).append(sample)


def load_spec(url: str, concurrency: int, count: int, **extra: Any) -> dict[str, Any]:
    return {"url": url, "concurrency": concurrency, "count": count, "max_s": MAX_S, **extra}


def measure_hello(hello: Served, concurrency: int, count: int) -> tuple[LoadResult, float]:
    cpu0 = cpu_seconds(hello.pid)
    result = run_load(
        load_spec(hello.url + "/", concurrency, count, body=CALL_BODY, headers=JSON_HEADERS)
    )
    return result, (cpu_seconds(hello.pid) - cpu0) * 1000 / max(result.ok, 1)


def measure_calls(server: Served, concurrency: int, count: int) -> tuple[LoadResult, float, float]:
    cpu0 = cpu_seconds(server.pid)
    result = run_load(
        load_spec(
            server.url + "/calls/outbound", concurrency, count, body=CALL_BODY, headers=JSON_HEADERS
        )
    )
    settled_at = wait_settled(server)
    cpu_ms = (cpu_seconds(server.pid) - cpu0) * 1000 / max(result.ok, 1)
    return result, result.ok / (settled_at - result.t_start), cpu_ms


def measure_idle(server: Served, count: int) -> list[float]:
    """POST latency (ms) of calls placed one at a time, each once every call before it
    settled: the server has nothing else to do (a new connection per request, as curl)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        http_post_json(server.url + "/calls/outbound", json.loads(CALL_BODY))
        latencies.append((time.perf_counter() - started) * 1000)
        wait_settled(server, poll_s=0.005)
    return latencies


def measure_webhooks(
    server: Served, call_ids: list[str], concurrency: int, count: int, prefix: str
) -> tuple[LoadResult, float]:
    cpu0 = cpu_seconds(server.pid)
    result = run_load(
        load_spec(
            server.url + "/webhooks/livekit",
            concurrency,
            count,
            webhooks={
                "call_ids": call_ids,
                "api_key": DEV_API_KEY,
                "api_secret": DEV_API_SECRET,
                "id_prefix": prefix,
            },
        )
    )
    return result, (cpu_seconds(server.pid) - cpu0) * 1000 / max(result.ok, 1)


def calls_phase(
    root: Path, hello: Served, plan: Plan, memory: MemoryPlan | None
) -> tuple[Series, list[str], list[Point]]:
    """The calls series; with `memory`, then more calls on the same server up to its count."""
    series = Series()
    server = start_server(root / "calls", time_scale=0.0)
    config = root / "calls" / "config.json"
    points = []
    try:
        note("http: warming up (50 calls)")
        warm = run_load(
            load_spec(server.url + "/calls/outbound", 10, 50, body=CALL_BODY, headers=JSON_HEADERS)
        )
        wait_settled(server)
        placed = warm.ok + warm.errors
        points.append(point(server, config, placed, warm.errors))
        run_load(load_spec(hello.url + "/", 10, 500, body=CALL_BODY, headers=JSON_HEADERS))
        for r in range(plan.repeats):
            for c in CONCURRENCY:
                note(f"http: calls, repeat {r + 1}/{plan.repeats}, {c} clients")
                h, h_cpu = measure_hello(hello, c, plan.hello[c])
                k, settled, cpu_ms = measure_calls(server, c, plan.calls[c])
                series.add(c, Sample(h, k, settled, cpu_ms, h_cpu))
                placed += k.ok + k.errors
        if memory is not None:
            points.append(point(server, config, placed, 0))
            points += grow(server, config, placed, memory)
    finally:
        server.stop()
    return series, server.log_problems(), points


def split_phase(root: Path, hello: Served, plan: Plan) -> Series:
    """The same calls with the sandbox in its own process (not counted against the server):
    what the server itself costs per call, as against a real LiveKit (issue 17's goals)."""
    split = Series()
    sandbox, server = start_split(root / "split")
    try:
        run_load(
            load_spec(server.url + "/calls/outbound", 10, 50, body=CALL_BODY, headers=JSON_HEADERS)
        )
        wait_settled(server)
        for r in range(plan.repeats):
            for c in (1, 50):
                note(f"http: calls, sandbox in its own process, repeat {r + 1}, {c} clients")
                h, h_cpu = measure_hello(hello, c, plan.hello[c])
                sandbox_cpu0 = cpu_seconds(sandbox.pid)
                k, settled, cpu_ms = measure_calls(server, c, plan.calls[c])
                sandbox_ms = (cpu_seconds(sandbox.pid) - sandbox_cpu0) * 1000 / max(k.ok, 1)
                split.add(c, Sample(h, k, settled, cpu_ms, h_cpu, sandbox_ms))
        note(f"http: {plan.idle_calls} calls one at a time, sandbox in its own process")
        split.idle_ms = measure_idle(server, plan.idle_calls)
    finally:
        try:
            server.stop()
        finally:
            sandbox.stop()
    return split


def webhooks_phase(root: Path, hello: Served, plan: Plan) -> tuple[Series, list[str]]:
    series = Series()
    # Real-time sandbox: the calls ring (live) for the whole phase, no simulated webhooks.
    server = start_server(root / "webhooks", time_scale=1.0, CALL_RINGING_TIMEOUT_S="600")
    try:
        call_ids = []
        for _ in range(WEBHOOK_CALLS):
            answer = http_post_json(
                server.url + "/calls/outbound",
                json.loads(CALL_BODY) | {"phone_number": WEBHOOK_NUMBER},
            )
            call_ids.append(str(answer["call_id"]))
        time.sleep(0.5)  # the sandbox's own first webhooks (room started, joined) land
        measure_webhooks(server, call_ids, 10, 200, "warm")
        for r in range(plan.repeats):
            for c in CONCURRENCY:
                note(f"http: webhooks, repeat {r + 1}/{plan.repeats}, {c} clients")
                h, h_cpu = measure_hello(hello, c, plan.hello[c])
                w, cpu_ms = measure_webhooks(server, call_ids, c, plan.webhooks[c], f"r{r}c{c}_")
                series.add(c, Sample(h, w, w.rps, cpu_ms, h_cpu))
    finally:
        server.stop()
    return series, server.log_problems()


def _ratio(samples: list[Sample], settled: bool = False) -> Spread:
    return Spread.of([(s.settled_rps if settled else s.subject.rps) / s.hello.rps for s in samples])


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def calls_table(series: Series) -> tuple[str, list[Goal]]:
    rows = []
    for c, samples in sorted(series.samples.items()):
        errors = sum(s.subject.errors for s in samples)
        rows.append(
            [
                str(c),
                f"{_med([s.hello.rps for s in samples]):,.0f}",
                f"{_med([s.subject.rps for s in samples]):,.0f}",
                _ratio(samples).fmt(".3f"),
                f"{_med([s.settled_rps for s in samples]):,.0f}",
                _ratio(samples, settled=True).fmt(".3f"),
                Spread.of([s.subject.p(50) for s in samples]).fmt(".1f"),
                Spread.of([s.subject.p(99) for s in samples]).fmt(".1f"),
                f"{_med([s.hello.p(50) for s in samples]):.2f} / "
                f"{_med([s.hello.p(99) for s in samples]):.2f}",
                f"{_med([s.cpu_ms for s in samples]):.2f} / "
                f"{_med([s.hello_cpu_ms for s in samples]):.3f}",
                str(errors),
            ]
        )
    text = table(
        [
            "clients",
            "hello req/s",
            "calls req/s",
            "calls / hello (min / med / max)",
            "settled calls/s",
            "settled / hello",
            "calls p50 ms",
            "calls p99 ms",
            "hello p50 / p99 ms",
            "server CPU ms per call / per hello",
            "errors",
        ],
        rows,
    )
    goals = [
        Goal(
            "errors at any concurrency",
            float(sum(s.subject.errors for c in series.samples for s in series.samples[c])),
            0,
            "<=",
        ),
    ]
    return text, goals


def split_goals(split: Series) -> list[Goal]:
    """Issue 17's goals, with the sandbox in its own process (as a real LiveKit would be)."""
    one, fifty = split.samples[1], split.samples[50]
    p99 = Spread.of([s.subject.p(99) for s in one])
    rps50 = _ratio(fifty, settled=True)
    goals = [
        Goal(
            f"server CPU per settled call / hello CPU per request at {c} client(s)",
            cpu.mid,
            30.0,
            "<=",
            "x",
            cpu,
        )
        for c, cpu in (
            (c, Spread.of([s.cpu_ms / s.hello_cpu_ms for s in split.samples[c]])) for c in (1, 50)
        )
    ]
    return [
        *goals,
        Goal("settled calls/s / hello req/s at 50 clients", rps50.mid, 1 / 30, ">=", "", rps50),
        Goal("POST /calls/outbound p99 at 1 client", p99.mid, 10.0, "<=", " ms", p99),
        Goal(
            "errors, sandbox in its own process",
            float(sum(s.subject.errors for c in split.samples for s in split.samples[c])),
            0,
            "<=",
        ),
    ]


def idle_line(split: Series) -> str:
    """A call's latency when the server has nothing else to do, next to how busy the server
    is when 1 client places calls back to back (is the 1-client p99 queueing, or the path?)."""
    idle = sorted(split.idle_ms)
    busy = _med([s.settled_rps * s.cpu_ms / 1000 for s in split.samples[1]])
    return (
        f"One call at a time ({len(idle)} calls, each placed once the one before it settled, "
        f"a new connection each, as curl): POST p50 {percentile(idle, 50):.1f} ms, p99 "
        f"{percentile(idle, 99):.1f} ms. Back to back at 1 client the server is {busy:.2f} "
        "of a core busy (settled calls/s x server CPU per call)."
    )


def split_table(together: Series, split: Series) -> str:
    rows = []
    for c in (1, 50):
        for label, samples in (
            ("in the server's process", together.samples[c]),
            ("in its own process (the goals' setting)", split.samples[c]),
        ):
            sandbox = [s.sandbox_cpu_ms for s in samples if s.sandbox_cpu_ms is not None]
            rows.append(
                [
                    str(c),
                    label,
                    f"{_med([s.settled_rps for s in samples]):,.0f}",
                    _ratio(samples, settled=True).fmt(".3f"),
                    f"{_med([s.cpu_ms for s in samples]):.2f}",
                    f"{_med(sandbox):.2f}" if sandbox else "(included)",
                    f"{_med([s.cpu_ms / s.hello_cpu_ms for s in samples]):.0f}",
                    Spread.of([s.subject.p(50) for s in samples]).fmt(".1f"),
                    Spread.of([s.subject.p(99) for s in samples]).fmt(".1f"),
                ]
            )
    return table(
        [
            "clients",
            "sandbox",
            "settled calls/s",
            "settled / hello (min / med / max)",
            "server CPU ms per call",
            "sandbox CPU ms per call",
            "server CPU per call / hello CPU per request",
            "p50 ms",
            "p99 ms",
        ],
        rows,
    )


def webhooks_table(series: Series) -> tuple[str, list[Goal]]:
    rows = []
    goals = []
    for c, samples in sorted(series.samples.items()):
        ratio = _ratio(samples)
        rows.append(
            [
                str(c),
                f"{_med([s.hello.rps for s in samples]):,.0f}",
                f"{_med([s.subject.rps for s in samples]):,.0f}",
                ratio.fmt(".3f"),
                Spread.of([s.subject.p(50) for s in samples]).fmt(".2f"),
                Spread.of([s.subject.p(99) for s in samples]).fmt(".2f"),
                f"{_med([s.cpu_ms for s in samples]):.3f} / "
                f"{_med([s.hello_cpu_ms for s in samples]):.3f}",
                str(sum(s.subject.errors for s in samples)),
            ]
        )
        goals.append(
            Goal(f"webhooks/s / hello req/s at {c} clients", ratio.mid, 0.25, ">=", "", ratio)
        )
    text = table(
        [
            "clients",
            "hello req/s",
            "webhooks/s",
            "webhooks / hello (min / med / max)",
            "p50 ms",
            "p99 ms",
            "server CPU ms per webhook / per hello",
            "errors",
        ],
        rows,
    )
    return text, goals


def run(plan: Plan, memory: MemoryPlan | None = None) -> str:
    with workdir("http") as root:
        for sub in ("calls", "webhooks", "split"):
            (root / sub).mkdir()
        hello = start_hello(root)
        hello_rss = rss_bytes(hello.pid)
        try:
            calls, calls_problems, points = calls_phase(root, hello, plan, memory)
            split = split_phase(root, hello, plan)
            hooks, hooks_problems = webhooks_phase(root, hello, plan)
        finally:
            hello.stop()
    calls_text, calls_goals = calls_table(calls)
    split_text = split_table(calls, split)
    hooks_text, hooks_goals = webhooks_table(hooks)
    problems = calls_problems + hooks_problems
    return section(
        "Call intake and webhook ingest (bench/http.py)",
        [
            "`POST /calls/outbound` through `server.py` (own process, sandbox at time scale 0 in "
            "the same process: each call's simulation and its 6 webhooks count against the "
            "server) vs a bare aiohttp hello-world handler served the same way, same load "
            f"generator, same run; {plan.repeats} repeats, min / median / max over repeats. "
            "Settled = placed and all its webhooks applied (final status).",
            "",
            calls_text,
            "",
            *(g.line() for g in calls_goals),
            "",
            "The goals' setting (issue 17): the same calls with the sandbox in its own "
            "process, as a real LiveKit would be, so the server pays only its own part (1 "
            "intake request, 2 Twirp calls out, 6 webhooks and 7 agent reports in, played by "
            "the sandbox); server CPU per call is also given as a multiple of hello-world CPU "
            "per request measured just before, at the same concurrency.",
            "",
            split_text,
            "",
            idle_line(split),
            "",
            *(g.line() for g in split_goals(split)),
            "",
            f"Signed webhook ingest (`POST /webhooks/livekit`: verify JWT + body hash, dedupe, "
            f"store), distinct events with unique ids about {WEBHOOK_CALLS} live calls, signed "
            "as LiveKit signs them (before the clock starts).",
            "",
            hooks_text,
            "",
            *(g.line() for g in hooks_goals),
            "",
            f"Server log problems: {num(float(len(problems)), '.0f')}"
            + ("".join(f"\n    {p}" for p in problems) if problems else ""),
        ],
    ) + ("\n" + report(points, hello_rss, calls_problems, memory) if memory else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--memory", action="store_true", help="then the memory benchmark on the same server"
    )
    args = parser.parse_args()
    memory = (MEMORY_QUICK if args.quick else MEMORY_FULL) if args.memory else None
    emit(run(QUICK if args.quick else FULL, memory))


if __name__ == "__main__":
    main()
