"""Load: 200 calls (RELIABILITY_SCALE=1) through the sandbox from 50 concurrent clients, every
outcome in the mix, all their webhooks delivered. Every call reaches the outcome its test number
stands for, config.json ends with no live record, the calls table holds every call, and nothing
is logged at ERROR.

200, not 500: the sandbox held as many calls at once either way (a peak of 53 rooms live with
500 calls, 65 with 200, one run each), the 50 clients each place several calls one after the
other, and the calls' list is read a page of 100 at a time (a full page, then the next); 500
took 15 s of CPU for nothing 200 do not tell. RELIABILITY_SCALE=10 runs 2,000."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from sandbox import scenario_for_number
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import config_forgets
from tests.reliability.conftest import Figures, LogGuard, scaled

CLIENTS = 50
# Endings of the sandbox's test numbers: completed (twice as often), busy, no answer, trunk
# failure, voicemail, and a callee hanging up after 2 s.
ENDINGS = ["0123", "4567", "0486", "0480", "0503", "0999", "7702"]
EVENTS_PER_CALL = 6  # room_started, participant_joined, track_(un)published, left, finished


def number_for(i: int) -> str:
    return f"+1415{200 + i % 700:03d}{ENDINGS[i % len(ENDINGS)]}"


async def test_200_calls_from_50_clients(
    start_app: AppFactory, tmp_path: Path, log_guard: LogGuard, figures: Figures
) -> None:
    calls = scaled(200, minimum=len(ENDINGS))
    client = await start_app(
        sandbox_time_scale=0.01,
        calls_rate_limit_per_min=1_000_000,
        calls_max_active=calls,
        call_ringing_timeout_s=10,
    )
    sandbox = client.app[SANDBOX]
    url = str(client.make_url("/calls/outbound"))
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(calls):
        queue.put_nowait(i)
    placed: dict[str, str] = {}
    statuses: Counter[int] = Counter()

    async def caller() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"phone_number": number_for(i), "name": f"Load {i}", "language": "en"}
                async with session.post(url, json=body) as resp:
                    statuses[resp.status] += 1
                    if resp.status == 200:
                        placed[(await resp.json())["call_id"]] = body["phone_number"]

    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(CLIENTS)))
    placing_s = time.monotonic() - started
    assert statuses == {200: calls}
    await sandbox.wait_idle(120)  # every simulation over, every webhook delivered
    total_s = time.monotonic() - started

    assert sandbox.webhooks_dropped == 0 and sandbox.webhooks_refused == 0
    assert sandbox.webhooks_delivered == EVENTS_PER_CALL * calls
    rows: list[dict[str, Any]] = []
    before: float | None = None
    while True:  # page through GET /calls like a client would
        query = f"/calls?limit=100{'' if before is None else f'&before={before}'}"
        page = await (await client.get(query)).json()
        rows += page["calls"]
        before = page["next_before"]
        if before is None:
            break
    assert len(rows) == calls and {r["call_id"] for r in rows} == set(placed)
    wrong = [
        (r["status"], scenario_for_number(placed[r["call_id"]]).outcome)
        for r in rows
        if r["status"] != scenario_for_number(placed[r["call_id"]]).outcome
    ]
    assert wrong == []
    assert await config_forgets(tmp_path / "config.json") == {}
    assert log_guard.at_least(logging.ERROR) == []
    outcomes = Counter(r["status"] for r in rows)
    figures.add(
        f"{calls} calls from {CLIENTS} clients: {calls}/{calls} answered 200 "
        f"({calls / placing_s:.0f} calls/s), {sandbox.webhooks_delivered} webhooks delivered "
        f"(0 dropped, 0 refused), {len(rows)} rows, outcomes "
        + ", ".join(f"{n} {s}" for s, n in sorted(outcomes.items()))
        + f" (all as expected), 0 live config records, 0 error logs; {total_s:.1f} s"
    )
