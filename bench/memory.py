"""Server memory and config.json size after many calls through the sandbox.

`server.py` runs in its own process with the sandbox at time scale 0, so every call is placed,
simulated and settled (all its webhooks applied) at once; the load generator places the calls
in chunks (50 concurrent clients) and after each chunk we wait until no call is live, then read
the server's RSS (/proc) and config.json. Baselines from the same run: the same server idle
(started, warmed up) and the bare hello-world server.

`python -m bench` measures this on the server of `bench.http` (`--memory`), which has placed
about half of the calls by then; `python -m bench.memory` starts its own server.

    python -m bench.memory [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import (
    Goal,
    Served,
    emit,
    live_calls,
    note,
    rss_bytes,
    run_load,
    section,
    start_hello,
    start_server,
    table,
    wait_settled,
    workdir,
)

MB = 1024 * 1024
CALL_BODY = json.dumps(
    {
        "phone_number": "+34612345678",  # the sandbox answers, talks, hangs up: completed
        "name": "Alice Example",
        "dynamic_instruction": (
            "You are calling to confirm tomorrow's dental appointment at 10:30. Be brief, "
            "offer to reschedule if needed and answer questions about the clinic's address."
        ),
        "language": "es",
        "emotion": "friendly",
        "additional_params": {"customer_tier": "Premium", "campaign_id": "SUMMER2024"},
    }
)
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Plan:
    calls: int
    chunk: int


FULL = Plan(calls=10_000, chunk=2_500)
QUICK = Plan(calls=2_000, chunk=1_000)


@dataclass(frozen=True)
class Point:
    placed: int
    rss: int
    config_bytes: int
    records: int
    live: int
    errors: int


def config_records(path: Path) -> int:
    calls = json.loads(path.read_bytes()).get("calls", {})
    return len(calls) if isinstance(calls, dict) else -1


RECORDS_DRAIN_S = 10.0


def point(server: Served, config: Path, placed: int, errors: int) -> Point:
    """Where the server stands now (call once no call is live). A busy or unanswered call is
    final at participant_left; its config record leaves at the room_finished that follows, so
    give those a moment (bounded) before counting the records."""
    deadline = time.monotonic() + RECORDS_DRAIN_S
    while config_records(config) > live_calls(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    return Point(
        placed,
        rss_bytes(server.pid),
        config.stat().st_size,
        config_records(config),
        live_calls(server),
        errors,
    )


def grow(server: Served, config: Path, placed: int, plan: Plan) -> list[Point]:
    """Place calls (50 clients) until `plan.calls` were placed, a point after each chunk."""
    points = []
    errors = 0
    while placed < plan.calls:
        count = min(plan.chunk, plan.calls - placed)
        note(f"memory: placing calls {placed:,}..{placed + count:,} of {plan.calls:,}")
        result = run_load(
            {
                "url": server.url + "/calls/outbound",
                "concurrency": 50,
                "count": count,
                "max_s": 300,
                "body": CALL_BODY,
                "headers": JSON_HEADERS,
            }
        )
        errors += result.errors
        placed += result.ok + result.errors
        wait_settled(server, timeout=300)
        points.append(point(server, config, placed, errors))
    return points


def report(points: list[Point], hello_rss: int, problems: list[str], plan: Plan) -> str:
    """The memory table; points[0] is the idle (warmed-up) server."""
    idle = points[0].rss
    rows = [
        [
            f"{p.placed:,}",
            f"{p.rss / MB:.1f}",
            f"{p.rss / idle:.2f}",
            f"{p.rss / hello_rss:.2f}",
            f"{p.config_bytes:,}",
            f"{p.records} / {p.live}",
            str(p.errors),
        ]
        for p in points
    ]
    last = points[-1]
    first_chunk = points[1] if len(points) > 2 else points[0]
    growth = (last.rss - first_chunk.rss) / max(last.placed - first_chunk.placed, 1)
    goals = [
        Goal(f"server RSS after {last.placed:,} calls", last.rss / MB, 150.0, "<=", " MB"),
        Goal("config.json records beyond live calls", float(last.records - last.live), 0, "<="),
    ]
    return section(
        "Memory (bench/memory.py)",
        [
            f"Server RSS after N calls through the sandbox (time scale 0; each measurement once "
            f"no call is live; the last chunks at 50 clients, {plan.chunk:,} calls each). "
            f"Baselines from the same run: the idle server (warmed up) = {idle / MB:.1f} MB, "
            f"hello-world = {hello_rss / MB:.1f} MB.",
            "",
            table(
                [
                    "calls placed",
                    "server RSS MB",
                    "vs idle server",
                    "vs hello-world",
                    "config.json bytes",
                    "records in config.json / live calls",
                    "errors",
                ],
                rows,
            ),
            "",
            f"RSS growth from the second point on: {growth / 1024:.2f} KB per call.",
            "",
            *(g.line() for g in goals),
            f"- server log problems: {len(problems)}"
            + ("".join(f"\n    {p}" for p in problems) if problems else ""),
        ],
    )


def run(plan: Plan) -> str:
    with workdir("memory") as root:
        hello = start_hello(root)
        hello_rss = rss_bytes(hello.pid)
        hello.stop()
        server = start_server(root, time_scale=0.0)
        config = root / "config.json"
        try:
            # The idle baseline: started, a few calls placed so every code path is loaded.
            run_load(
                {
                    "url": server.url + "/calls/outbound",
                    "concurrency": 10,
                    "count": 50,
                    "max_s": 30,
                    "body": CALL_BODY,
                    "headers": JSON_HEADERS,
                }
            )
            wait_settled(server)
            points = [point(server, config, 50, 0)]
            points += grow(server, config, 50, plan)
        finally:
            server.stop()
        problems = server.log_problems()
    return report(points, hello_rss, problems, plan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    emit(run(QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
