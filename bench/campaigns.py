"""Campaign benchmarks: the scheduler's cost per call, the rate it achieves, and memory.

    python -m bench.campaigns [--quick]

1. Overhead: server CPU per settled call for N calls placed by a campaign vs the same N calls
   POSTed one by one (1 client), side by side on one server (sandbox in process, time 0).
2. Rate: achieved calls/s (first to last dial, from the campaign's own attempt times) at 1,
   10 and 50 calls/s requested.
3. Memory: the server's RSS before and after a 100,000-row campaign is created (scheduled for
   later, so it is loaded, not running), how long the creation took, and how long the other
   requests took meanwhile (`GET /calls?limit=50` from another client, back to back: each
   needs the database, whose one thread stores the recipients).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    Goal,
    cpu_seconds,
    emit,
    http_get,
    http_post_json,
    note,
    percentile,
    rss_bytes,
    run_load,
    section,
    start_server,
    table,
    wait_settled,
    workdir,
)
from bench.http import load_spec

JSON_HEADERS = {"Content-Type": "application/json"}
ALWAYS = {"start": "00:00", "end": "23:59", "timezone": "UTC"}


def number(n: int) -> str:
    """Distinct valid US numbers (the sandbox answers and hangs up at time scale 0)."""
    area, rest = divmod(n, 800 * 10000)
    exchange, line = divmod(rest, 10000)
    return f"+1{(415, 650, 408, 510, 925)[area]}{200 + exchange}{line:04d}"


def campaign(
    url: str, name: str, first: int, count: int, cps: float, **extra: Any
) -> dict[str, Any]:
    body = {
        "name": name,
        "recipients": [{"phone_number": number(first + i)} for i in range(count)],
        "pacing": {"calls_per_second": cps, "max_concurrent": 200},
        "window": ALWAYS,
        "retry": {"on": []},
        **extra,
    }
    return http_post_json(url + "/campaigns", body, timeout=600)


def wait_completed(url: str, campaign_id: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, raw = http_get(f"{url}/campaigns/{campaign_id}")
        data: dict[str, Any] = json.loads(raw)["campaign"]
        if data["status"] == "completed":
            return data
        time.sleep(0.05)
    raise RuntimeError(f"campaign {campaign_id} did not complete in {timeout:.0f} s")


def overhead(root: Path, calls: int, repeats: int) -> tuple[list[list[str]], float]:
    server = start_server(
        root / "overhead", CAMPAIGN_ENFORCE_CALLING_HOURS="0", LOG_LEVEL="WARNING"
    )
    rows, ratios = [], []
    try:
        body = json.dumps({"phone_number": "+14155550123", "name": "Bench"})
        run_load(load_spec(server.url + "/calls/outbound", 10, 50, body=body, headers=JSON_HEADERS))
        wait_settled(server)
        for r in range(repeats):
            note(f"campaigns: overhead, repeat {r + 1}/{repeats}")
            cpu0 = cpu_seconds(server.pid)
            result = run_load(
                load_spec(server.url + "/calls/outbound", 1, calls, body=body, headers=JSON_HEADERS)
            )
            wait_settled(server)
            if result.ok != calls:
                raise RuntimeError(
                    f"one by one: {result.ok} of {calls} placed: {result.error_samples[:1]}"
                )
            single = (cpu_seconds(server.pid) - cpu0) * 1000 / result.ok
            cpu0 = cpu_seconds(server.pid)
            created = campaign(server.url, f"overhead {r}", r * calls, calls, 100.0)
            wait_completed(server.url, created["campaign_id"])
            wait_settled(server)
            by_campaign = (cpu_seconds(server.pid) - cpu0) * 1000 / calls
            ratios.append(by_campaign / single)
            rows.append([str(r + 1), f"{single:.2f}", f"{by_campaign:.2f}", f"{ratios[-1]:.2f}x"])
    finally:
        server.stop()
    return rows, sorted(ratios)[len(ratios) // 2]


def rates(root: Path, plan: list[tuple[float, int]]) -> tuple[list[list[str]], list[float]]:
    server = start_server(root / "rates", CAMPAIGN_ENFORCE_CALLING_HOURS="0", LOG_LEVEL="WARNING")
    rows, errors = [], []
    try:
        first = 0
        for cps, count in plan:
            note(f"campaigns: {count} calls at {cps:g}/s")
            created = campaign(server.url, f"rate {cps}", first, count, cps)
            first += count
            done = wait_completed(server.url, created["campaign_id"])
            achieved = float(done["achieved_calls_per_second"])
            errors.append(abs(achieved - cps) / cps)
            rows.append(
                [f"{cps:g}", str(count), f"{achieved:.3f}", f"{(achieved / cps - 1) * 100:+.1f}%"]
            )
    finally:
        server.stop()
    return rows, errors


def memory(root: Path, rows_n: int) -> tuple[float, float, float, list[float]]:
    """RSS before and after, the creation's seconds, and the latencies (ms) of the GET /calls
    sent back to back while it ran."""
    server = start_server(root / "memory", CAMPAIGN_ENFORCE_CALLING_HOURS="0", LOG_LEVEL="WARNING")
    latencies: list[float] = []
    creating = threading.Event()
    creating.set()

    def probe() -> None:
        while creating.is_set():
            started = time.monotonic()
            http_get(server.url + "/calls?limit=50", timeout=60)
            latencies.append((time.monotonic() - started) * 1000)
            time.sleep(0.01)

    try:
        time.sleep(1.0)
        before = rss_bytes(server.pid)
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()
        prober = threading.Thread(target=probe, daemon=True)
        started = time.monotonic()
        prober.start()
        campaign(server.url, "memory", 0, rows_n, 1.0, start_at=later)
        took = time.monotonic() - started
        creating.clear()
        prober.join(60)
        time.sleep(2.0)
        after = rss_bytes(server.pid)
    finally:
        creating.clear()
        server.stop()
    return before / 2**20, after / 2**20, took, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, repeats = (100, 1) if args.quick else (300, 3)
    plan = (
        [(1.0, 6), (10.0, 40), (50.0, 150)] if args.quick else [(1.0, 11), (10.0, 101), (50.0, 501)]
    )
    rows_n = 20_000 if args.quick else 100_000
    with workdir("campaigns") as root:
        for part in ("overhead", "rates", "memory"):
            (root / part).mkdir()
        o_rows, o_ratio = overhead(root, calls, repeats)
        r_rows, r_errors = rates(root, plan)
        m_before, m_after, m_took, m_lat = memory(root, rows_n)
    goals = [
        Goal("worst achieved-rate error", max(r_errors) * 100, 5.0, "<=", "%"),
        Goal(f"RSS added by a {rows_n:,}-row campaign", m_after - m_before, 50.0, "<=", " MB"),
    ]
    emit(
        section(
            "Campaigns",
            [
                f"Server CPU per settled call, {calls} calls, ms (sandbox in process, time 0):",
                table(["repeat", "one by one (1 client)", "by a campaign", "ratio"], o_rows),
                f"Scheduler overhead: median ratio {o_ratio:.2f}x.",
                table(["requested calls/s", "calls", "achieved calls/s", "error"], r_rows),
                table(
                    [
                        "rows",
                        "RSS before (MB)",
                        "RSS after (MB)",
                        "added (MB)",
                        "create (s)",
                        "GET /calls meanwhile: n, p50 / p99 / max (ms)",
                    ],
                    [
                        [
                            f"{rows_n:,}",
                            f"{m_before:.1f}",
                            f"{m_after:.1f}",
                            f"{m_after - m_before:.1f}",
                            f"{m_took:.1f}",
                            f"{len(m_lat)}, {percentile(m_lat, 50):.0f} / "
                            f"{percentile(m_lat, 99):.0f} / {max(m_lat):.0f}",
                        ]
                    ],
                ),
                "\n".join(g.line() for g in goals),
            ],
        )
    )


if __name__ == "__main__":
    main()
