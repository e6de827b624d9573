"""Reads that grow with the database: what a `/metrics` scrape costs the other requests.

    python -m bench.counts [--quick]

`/metrics` counts the calls by status over the whole table (Calls are kept: the table only
grows). The server is started on a database of N finished calls (1,000,000; 200,000 with
`--quick`), and `GET /calls/{call_id}` is timed back to back from one client, side by side in
one run: alone, then while another client scrapes `/metrics` back to back
(`METRICS_REUSE_S=0`, the worst a scraper can do; by default a count is given again for 5 s).
On SQLite the count runs on a read-only connection and thread of its own; when it ran on the
database's one thread, every request needing the database waited for it (GET p50 68 ms at
1,000,000 calls, against 0.7 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import threading
import time
from pathlib import Path

from bench.harness import (
    Goal,
    emit,
    http_get,
    note,
    percentile,
    section,
    start_server,
    table,
    workdir,
)
from common.storage.sqlite import SqliteCallStore

STATUSES = ("completed",) * 7 + ("no_answer", "busy", "failed")
CONFIG = json.dumps({"caller_name": "Bench", "agent_instructions": "x" * 300, "language": "en"})


def build_database(path: Path, calls: int) -> str:
    """`calls` finished calls in a database at this code's schema; returns one call id."""

    async def migrate() -> None:
        await (await SqliteCallStore.open(path)).close()

    asyncio.run(migrate())
    rng = random.Random(17)
    start = time.time() - calls
    rows = (
        (
            f"call-{n:012x}",
            "+14155550123",
            "Bench",
            "en",
            "neutral",
            rng.choice(STATUSES),
            start + n,
            start + n + 30,
            start + n + 30,
            30,
            600,
            CONFIG,
        )
        for n in range(calls)
    )
    conn = sqlite3.connect(path)
    try:
        conn.executemany(
            "INSERT INTO calls (call_id, phone_number, caller_name, language, emotion, status,"
            " created_at, updated_at, ended_at, ringing_timeout_s, max_duration_s, config)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.commit()
    finally:
        conn.close()
    return f"call-{calls // 2:012x}"


def time_gets(url: str, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        status, _ = http_get(url, timeout=30)
        if status != 200:
            raise RuntimeError(f"GET {url}: {status}")
        latencies.append((time.monotonic() - started) * 1000)
    return latencies


def scraping(url: str, stop: threading.Event, took: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        http_get(url + "/metrics", timeout=30)
        took.append((time.monotonic() - started) * 1000)


def row(case: str, lat: list[float], alone: list[float]) -> list[str]:
    p99 = percentile(lat, 99)
    return [
        case,
        str(len(lat)),
        f"{percentile(lat, 50):.1f} / {p99:.1f} / {max(lat):.1f}",
        f"{p99 / percentile(alone, 99):.2f}x",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls, seconds = (200_000, 4.0) if args.quick else (1_000_000, 10.0)
    with workdir("counts") as root:
        note(f"counts: a database of {calls:,} finished calls")
        call_id = build_database(root / "calls.db", calls)
        server = start_server(
            root, LOG_LEVEL="WARNING", METRICS_REUSE_S="0", REAPER_INTERVAL_S="3600"
        )
        try:
            get = f"{server.url}/calls/{call_id}"
            time_gets(get, 1.0)  # warm
            note("counts: GET /calls/{id} alone")
            alone = time_gets(get, seconds)
            note("counts: GET /calls/{id} while /metrics is scraped back to back")
            stop, scrapes = threading.Event(), list[float]()
            scraper = threading.Thread(target=scraping, args=(server.url, stop, scrapes))
            scraper.start()
            try:
                during = time_gets(get, seconds)
            finally:
                stop.set()
                scraper.join(60)
        finally:
            server.stop()
    ratio = percentile(during, 99) / percentile(alone, 99)
    emit(
        section(
            "Reads that grow with the database",
            [
                f"`GET /calls/{{id}}` back to back from one client, a database of {calls:,}"
                f" calls, {seconds:g} s each (SQLite, sandbox in process):",
                table(
                    ["case", "GETs", "p50 / p99 / max ms", "p99 vs alone"],
                    [
                        row("alone", alone, alone),
                        row("while /metrics is scraped back to back", during, alone),
                    ],
                ),
                f"`/metrics` meanwhile: {len(scrapes)} scrapes, p50"
                f" {percentile(scrapes, 50):.0f} ms (each counts every call by status).",
                Goal("GET p99 while /metrics is scraped / alone", ratio, 5.0, "<=", "x").line(),
            ],
        )
    )


if __name__ == "__main__":
    main()
