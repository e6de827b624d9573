"""Customer webhooks (issue 14): delivery rate and latency to a local receiver, and their cost.

    python -m bench.webhooks [--quick]

Two servers side by side (`server.py`, each in its own process with the sandbox in process at
time scale 0, so every call is answered, talks and ends at once): one without a webhook URL,
one with CALLS_WEBHOOK_URL pointing at a receiver on 127.0.0.1. The receiver is a minimal
aiohttp app in its own process (this module with `--receiver-port`): it verifies every
request's Standard Webhooks signature with the `standardwebhooks` package and records, per
delivery, the time it arrived, its `webhook-id` and the event's `timestamp` (when the server
wrote the event to its outbox), so latency = arrival - event timestamp. All three processes
read the same machine's clock; the run checks it (the receiver's clock against ours, and each
call's `call.dialing` timestamp against the window of the POST that created it).

Calls are placed open-loop at a steady 50 calls/s (one POST every 20 ms whatever the answers
do) by an asyncio client in this process, alternately on the two servers (the order flips every
repeat). A run ends when every call settled, every agent report was taken, and (with webhooks)
all 4 events of every call (call.dialing, call.answered, call.report, call.ended) arrived and
the server recorded them delivered; server CPU from /proc over that whole span, per call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import socket
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from bench.harness import (
    HOST,
    PYTHON,
    Goal,
    Served,
    Spread,
    cpu_seconds,
    emit,
    free_port,
    http_get,
    machine,
    note,
    percentile,
    section,
    start_server,
    start_split,
    subprocess_env,
    table,
    wait_settled,
    workdir,
)

RATE = 50.0  # calls per second, paced
CALL = {"phone_number": "+14155550123", "name": "Bench"}
EVENTS = ("call.dialing", "call.answered", "call.report", "call.ended")
SECRET_ENV = "BENCH_WEBHOOK_SECRET"
P99_GOAL_MS = 100.0
CPU_GOAL_PCT = 10.0
DEFER_MS = 180.0  # near common/notify/deliveries.py HOST_BUSY_DEFER_S (0.2 s)
DRAIN_S = 60.0
SLOW_RECEIVER_S = 5.0  # how long the receiver's /hooks/slow takes to answer
POLL_WINDOW_S = 2.0  # at most this long for the deliveries of one run after its last call
BACKLOG_RETRY_S = 600  # the receiver is down: each call's first event is retried this much later
BACKLOG_RATE = 100.0  # calls per second placed for the backlog


@dataclass(frozen=True)
class Plan:
    calls: int
    repeats: int
    warmup: int
    split_repeats: int  # not a goal: the sandbox in its own process
    backlog: int  # not a goal: calls whose events wait behind a retry, the receiver down


FULL = Plan(calls=500, repeats=5, warmup=50, split_repeats=2, backlog=2000)
QUICK = Plan(calls=150, repeats=3, warmup=30, split_repeats=1, backlog=500)


# ----------------------------------------------------------------------------- the receiver


class Recorder:
    """Verifies each delivery and remembers (arrival, webhook-id, event timestamp, type, call)."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.records: list[list[Any]] = []
        self.refused = 0

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        if request.match_info.get("source") == "slow":  # a receiver slow to answer
            await asyncio.sleep(SLOW_RECEIVER_S)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = self.webhook.verify(body, headers)
        except (WebhookVerificationError, ValueError):
            self.refused += 1
            return web.Response(status=401)
        data = event.get("data") or {}
        self.records.append(
            [
                arrived,
                headers.get("webhook-id", ""),
                event.get("timestamp"),
                event.get("type"),
                data.get("call_id"),
                request.match_info.get("source", ""),
            ]
        )
        return web.Response(status=204)

    async def read(self, request: web.Request) -> web.Response:
        since = int(request.query.get("since", "0"))
        return web.json_response(
            {"records": self.records[since:], "refused": self.refused, "now": time.time()}
        )

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


def serve_receiver(port: int) -> None:
    recorder = Recorder(os.environ[SECRET_ENV])
    app = web.Application()
    app.router.add_get("/healthz", recorder.health)
    app.router.add_get("/records", recorder.read)
    app.router.add_post("/hooks/{source}", recorder.hook)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


def start_receiver(root: Path, secret: str) -> Served:
    port = free_port()
    argv = [PYTHON, "-m", "bench.webhooks", "--receiver-port", str(port)]
    served = Served("receiver", argv, port, subprocess_env({SECRET_ENV: secret}), root)
    served.wait_ready("/healthz")
    return served


@dataclass(frozen=True)
class Delivery:
    arrived: float
    webhook_id: str
    created: float  # the event's own timestamp (ms resolution, truncated)
    type: str
    call_id: str
    source: str  # which server sent it (ids are numbered per database)

    @property
    def latency_ms(self) -> float:
        return (self.arrived - self.created) * 1000.0


@dataclass
class Inbox:
    """What the receiver got so far, fetched incrementally."""

    receiver: Served
    deliveries: list[Delivery] = field(default_factory=list)
    refused: int = 0

    def fetch(self) -> float:
        """Fetch new records; returns the receiver's clock minus ours (midpoint estimate)."""
        before = time.time()
        _, raw = http_get(f"{self.receiver.url}/records?since={len(self.deliveries)}")
        after = time.time()
        doc = json.loads(raw)
        for arrived, webhook_id, stamp, kind, call_id, source in doc["records"]:
            created = datetime.fromisoformat(str(stamp)).timestamp()
            self.deliveries.append(
                Delivery(
                    float(arrived), str(webhook_id), created, str(kind), str(call_id), str(source)
                )
            )
        self.refused = int(doc["refused"])
        return float(doc["now"]) - (before + after) / 2

    def clock_offset(self, tries: int = 5) -> tuple[float, float]:
        """The receiver's clock minus ours, and the bound of that estimate (half a round trip)."""
        best = (math.inf, math.inf)
        for _ in range(tries):
            before = time.time()
            _, raw = http_get(f"{self.receiver.url}/records?since=1000000000")
            after = time.time()
            half = (after - before) / 2
            if half < best[1]:
                best = (float(json.loads(raw)["now"]) - (before + after) / 2, half)
        return best


# ----------------------------------------------------------------------------- the server's side


def metric(server: Served, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in the server's /metrics whose labels include `labels`."""
    _, body = http_get(server.url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        sample, _, label_text = key.partition("{")
        if sample == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def wait_quiet(server: Served, name: str, quiet_s: float = 0.3, timeout: float = 15.0) -> None:
    """Until the counter `name` has not moved for `quiet_s` (the last agent reports are in)."""
    deadline = time.monotonic() + timeout
    last, since = metric(server, name), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = metric(server, name)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
    raise RuntimeError(f"{name} still moving after {timeout:.0f} s")


# ----------------------------------------------------------------------------- paced load


@dataclass
class Placed:
    """One paced run: per call, when its POST was sent and answered (wall clock)."""

    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    t_start: float = 0.0
    last_sent: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.windows)

    @property
    def rate(self) -> float:
        span = self.last_sent - self.t_start
        return (self.ok + len(self.errors) - 1) / span if span > 0 else math.nan


async def paced(url: str, count: int, rate: float) -> Placed:
    """POST one call every 1/rate s (open loop: not waiting for answers), bounded in time."""
    placed = Placed()
    body = json.dumps(CALL).encode()
    headers = {"Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def one() -> None:
            sent, started = time.time(), time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    answer = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                placed.errors.append(f"{type(exc).__name__}: {exc}")
                return
            if status != 200:
                placed.errors.append(f"HTTP {status}: {answer[:200]!r}")
                return
            placed.latencies_ms.append((time.perf_counter() - started) * 1000)
            placed.windows[str(json.loads(answer)["call_id"])] = (sent, time.time())

        tasks = []
        start = time.perf_counter()
        placed.t_start = time.time()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            placed.last_sent = time.time()
            tasks.append(asyncio.create_task(one()))
        _, pending = await asyncio.wait(tasks, timeout=60)
        for task in pending:
            task.cancel()
        placed.errors += ["no answer within 60 s"] * len(pending)
    return placed


# ----------------------------------------------------------------------------- one run


@dataclass
class Run:
    placed: Placed
    settled_rps: float
    cpu_ms: float  # server CPU per settled call, from before the first POST to the end
    receiver_cpu_ms: float = math.nan  # per delivery
    deliveries: list[Delivery] = field(default_factory=list)
    span_s: float = math.nan  # first POST to last delivery
    server_le_100ms: float = math.nan  # the server's own latency histogram: share <= 100 ms
    not_delivered: float = 0.0  # attempts the server counted as anything but delivered
    missing: int = 0  # events expected but not received
    busy_cores: float = math.nan  # server CPU / wall time over the run

    @property
    def pacing_rate(self) -> float:
        """Events that arrived while calls were still being placed, per second of that."""
        span = self.placed.last_sent - self.placed.t_start
        arrived = sum(1 for d in self.deliveries if d.arrived <= self.placed.last_sent)
        return arrived / span if span > 0 else math.nan

    @property
    def tail_s(self) -> float:
        """From the last POST to the last delivery."""
        return max((d.arrived for d in self.deliveries), default=math.nan) - self.placed.last_sent

    def lat(self, q: float) -> float:
        return percentile([d.latency_ms for d in self.deliveries], q)

    def share_over(self, ms: float) -> float:
        """Percent of this run's deliveries that took longer than `ms`."""
        late = sum(1 for d in self.deliveries if d.latency_ms > ms)
        return late * 100 / len(self.deliveries) if self.deliveries else math.nan


def run_plain(server: Served, calls: int) -> Run:
    cpu0 = cpu_seconds(server.pid)
    placed = asyncio.run(paced(server.url + "/calls/outbound", calls, RATE))
    settled = wait_settled(server)
    wait_quiet(server, "agent_reports_total")
    cpu_s = cpu_seconds(server.pid) - cpu0
    busy = cpu_s / (time.time() - placed.t_start)
    return Run(
        placed,
        placed.ok / (settled - placed.t_start),
        cpu_s * 1000 / max(placed.ok, 1),
        busy_cores=busy,
    )


def run_hooked(server: Served, receiver: Served, inbox: Inbox, calls: int) -> Run:
    delivered0 = metric(server, "customer_webhook_deliveries_total", result="delivered")
    attempts0 = metric(server, "customer_webhook_deliveries_total")
    le0 = metric(server, "customer_webhook_latency_seconds_bucket", le="0.1")
    count0 = metric(server, "customer_webhook_latency_seconds_count")
    first = len(inbox.deliveries)
    cpu0, rcpu0 = cpu_seconds(server.pid), cpu_seconds(receiver.pid)
    placed = asyncio.run(paced(server.url + "/calls/outbound", calls, RATE))
    settled = wait_settled(server)
    expected = len(EVENTS) * placed.ok
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline:
        inbox.fetch()
        mine = [d for d in inbox.deliveries[first:] if d.call_id in placed.windows]
        if len({d.webhook_id for d in mine}) >= expected:
            break
        time.sleep(0.05)
    while time.monotonic() < deadline:  # and recorded as delivered by the server
        delivered = metric(server, "customer_webhook_deliveries_total", result="delivered")
        if delivered - delivered0 >= expected:
            break
        time.sleep(0.05)
    wait_quiet(server, "agent_reports_total")
    cpu_s = cpu_seconds(server.pid) - cpu0
    busy = cpu_s / (time.time() - placed.t_start)
    inbox.fetch()
    mine = [d for d in inbox.deliveries[first:] if d.call_id in placed.windows]
    count = metric(server, "customer_webhook_latency_seconds_count") - count0
    le = metric(server, "customer_webhook_latency_seconds_bucket", le="0.1") - le0
    attempts = metric(server, "customer_webhook_deliveries_total") - attempts0
    delivered = metric(server, "customer_webhook_deliveries_total", result="delivered") - delivered0
    return Run(
        placed,
        placed.ok / (settled - placed.t_start),
        cpu_s * 1000 / max(placed.ok, 1),
        busy_cores=busy,
        receiver_cpu_ms=(cpu_seconds(receiver.pid) - rcpu0) * 1000 / max(len(mine), 1),
        deliveries=mine,
        span_s=max((d.arrived for d in mine), default=math.nan) - placed.t_start,
        server_le_100ms=le / count if count else math.nan,
        not_delivered=attempts - delivered,
        missing=expected - len({d.webhook_id for d in mine}),
    )


@dataclass(frozen=True)
class Waiting:
    """Server CPU (cores) while deliveries wait and nothing is due."""

    idle: float  # nothing pending
    slow: float  # one call's first delivery held by a slow receiver, its later ones behind it
    backlog_calls: int
    backlog: float  # that many calls' first events retrying later, the receiver down


def _cores_over_window(server: Served) -> float:
    cpu0 = cpu_seconds(server.pid)
    time.sleep(POLL_WINDOW_S)
    return (cpu_seconds(server.pid) - cpu0) / POLL_WINDOW_S


def in_flight_cost(server: Served) -> tuple[float, float]:
    """The server's CPU (cores) idle, and while one delivery waits on a slow receiver."""
    time.sleep(0.5)
    idle = _cores_over_window(server)
    asyncio.run(paced(server.url + "/calls/outbound", 1, RATE))
    wait_settled(server)
    time.sleep(0.5)  # the call and its agent reports are done; call.dialing is in flight
    return idle, _cores_over_window(server)


def backlog_cost(server: Served, calls: int) -> float:
    """The server's CPU (cores) while `calls` calls' first events wait for their retry,
    BACKLOG_RETRY_S away (the receiver refuses connections), their later events behind them."""
    asyncio.run(paced(server.url + "/calls/outbound", calls, BACKLOG_RATE))
    wait_settled(server)
    # Every call's first event attempted once (refused: to be retried): 4 at a time to one
    # receiver, the rest given back 0.2 s at a time, so 2,000 calls' take tens of seconds.
    deadline = time.monotonic() + DRAIN_S
    while (
        metric(server, "customer_webhook_deliveries_total", result="retrying") < calls
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    time.sleep(0.5)
    return _cores_over_window(server)


# ----------------------------------------------------------------------------- checks


def order_violations(deliveries: list[Delivery]) -> int:
    """Calls whose dialing / answered / ended did not arrive in that order."""
    by_call: dict[str, list[str]] = {}
    for d in sorted(deliveries, key=lambda d: d.arrived):
        by_call.setdefault(d.call_id, []).append(d.type)
    wanted = ["call.dialing", "call.answered", "call.ended"]
    return sum(1 for kinds in by_call.values() if [k for k in kinds if k in wanted] != wanted)


def dialing_in_window(runs: list[Run]) -> tuple[int, int, float]:
    """Each call.dialing's timestamp against the POST that created it: (inside, of, worst ms
    outside). The event is written while that request is served, so on one clock it must fall
    between our send and our answer (1 ms slack: the timestamp is truncated to ms)."""
    inside, total, worst = 0, 0, 0.0
    for run in runs:
        for d in run.deliveries:
            if d.type != "call.dialing":
                continue
            sent, answered = run.placed.windows[d.call_id]
            total += 1
            outside = max(sent - 0.001 - d.created, d.created - answered, 0.0)
            inside += outside == 0.0
            worst = max(worst, outside * 1000)
    return inside, total, worst


# ----------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def report(
    plan: Plan,
    plain: list[Run],
    hooked: list[Run],
    inbox: Inbox,
    offset: tuple[float, float],
    problems: list[str],
    split: list[Run],
    waiting: Waiting,
) -> str:
    cpu_ratio = Spread.of([h.cpu_ms / p.cpu_ms for p, h in zip(plain, hooked, strict=True)])
    rows = []
    for label, runs in (("without webhooks", plain), ("with webhooks", hooked)):
        rows.append(
            [
                label,
                f"{sum(r.placed.ok for r in runs)} / {sum(len(r.placed.errors) for r in runs)}",
                Spread.of([r.placed.rate for r in runs]).fmt(".1f"),
                Spread.of([r.settled_rps for r in runs]).fmt(".1f"),
                Spread.of([percentile(r.placed.latencies_ms, 50) for r in runs]).fmt(".1f"),
                Spread.of([percentile(r.placed.latencies_ms, 99) for r in runs]).fmt(".1f"),
                Spread.of([r.cpu_ms for r in runs]).fmt(".2f"),
                Spread.of([r.busy_cores for r in runs]).fmt(".2f"),
            ]
        )
    calls_text = table(
        [
            "server",
            "calls ok / errors",
            "paced calls/s",
            "settled calls/s",
            "POST p50 ms",
            "POST p99 ms",
            "server CPU ms per settled call",
            "server busy, cores",
        ],
        rows,
    )
    d_rows = []
    for i, (p, h) in enumerate(zip(plain, hooked, strict=True)):
        d_rows.append(
            [
                str(i + 1),
                f"{len(h.deliveries):,} / {len(EVENTS) * h.placed.ok:,}",
                f"{len(h.deliveries) / h.span_s:.1f}",
                f"{h.pacing_rate:.1f}",
                f"{h.tail_s:.2f}",
                f"{h.lat(50):.1f}",
                f"{h.lat(99):.1f}",
                f"{h.lat(100):.1f}",
                f"{h.share_over(P99_GOAL_MS):.1f}% / {h.share_over(DEFER_MS):.1f}%",
                f"{h.server_le_100ms * 100:.1f}%",
                f"{h.receiver_cpu_ms:.2f}",
                f"{p.cpu_ms:.2f} / {h.cpu_ms:.2f} = {h.cpu_ms / p.cpu_ms:.3f}",
            ]
        )
    deliveries_text = table(
        [
            "repeat",
            "events received / expected",
            "events/s (first POST to last arrival)",
            "events/s while pacing",
            "last POST to last arrival, s",
            "latency p50 ms",
            "p99 ms",
            "max ms",
            f"> {P99_GOAL_MS:g} ms / > {DEFER_MS:g} ms",
            "server histogram <= 100 ms",
            "receiver CPU ms per event",
            "server CPU ms per call: without / with = ratio",
        ],
        d_rows,
    )
    s_rows = [
        [
            str(i + 1),
            f"{h.busy_cores:.2f}",
            f"{h.cpu_ms:.2f}",
            f"{h.pacing_rate:.1f}",
            f"{h.tail_s:.2f}",
            f"{h.lat(50):.1f}",
            f"{h.lat(99):.1f}",
            f"{h.lat(100):.1f}",
            f"{h.share_over(P99_GOAL_MS):.1f}% / {h.share_over(DEFER_MS):.1f}%",
            f"{len(h.deliveries):,} / {len(EVENTS) * h.placed.ok:,}",
        ]
        for i, h in enumerate(split)
    ]
    split_text = table(
        [
            "repeat",
            "server busy, cores",
            "server CPU ms per call",
            "events/s while pacing",
            "last POST to last arrival, s",
            "latency p50 ms",
            "p99 ms",
            "max ms",
            f"> {P99_GOAL_MS:g} ms / > {DEFER_MS:g} ms",
            "events received / expected",
        ],
        s_rows,
    )
    every = [d for h in hooked for d in h.deliveries]
    split_every = [d for h in split for d in h.deliveries]
    by_type = Counter(d.type for d in every)
    ids = Counter((d.source, d.webhook_id) for d in inbox.deliveries)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    failures = (
        inbox.refused
        + int(sum(h.not_delivered for h in hooked + split))
        + sum(h.missing for h in hooked + split)
        + sum(len(r.placed.errors) for r in plain + hooked + split)
    )
    inside, total, worst = dialing_in_window(hooked)
    p50 = Spread.of([h.lat(50) for h in hooked])
    p99 = Spread.of([h.lat(99) for h in hooked])
    lat_max = Spread.of([h.lat(100) for h in hooked])
    rate = Spread.of([len(h.deliveries) / h.span_s for h in hooked])
    lowest = min((d.latency_ms for d in every), default=math.nan)
    split_p99 = Spread.of([h.lat(99) for h in split])
    goals = [
        # As issue 17's goals are set: the sandbox in its own process, as a real LiveKit is.
        # With it in the server's process the server does LiveKit's work too and, on 2 cores,
        # is CPU-bound near 50 calls/s: its p99 is reported above, not judged.
        Goal(
            f"delivery p99 at {RATE:g} calls/s (sandbox in its own process)",
            split_p99.mid,
            P99_GOAL_MS,
            "<=",
            " ms",
            split_p99,
        ),
        Goal(
            "server CPU per call added by webhooks",
            (cpu_ratio.mid - 1) * 100,
            CPU_GOAL_PCT,
            "<=",
            "%",
            Spread(
                (cpu_ratio.low - 1) * 100, (cpu_ratio.mid - 1) * 100, (cpu_ratio.high - 1) * 100
            ),
        ),
        Goal("duplicate webhook-ids", float(duplicates), 0, "<="),
        Goal("failures (refused, retried, missing, POST errors)", float(failures), 0, "<="),
    ]
    return section(
        "Customer webhooks (bench/webhooks.py)",
        [
            f"Machine: {machine()}. {plan.repeats} repeats of {plan.calls} calls paced at "
            f"{RATE:g} calls/s (open loop, one POST `{json.dumps(CALL)}` every "
            f"{1000 / RATE:g} ms), alternately on two servers side by side (own processes, "
            "sandbox in process at time scale 0, SQLite): without a webhook URL, and with "
            "CALLS_WEBHOOK_URL at a verifying receiver on 127.0.0.1 (own process, "
            "`standardwebhooks`). min / median / max over repeats. Server CPU from /proc, from "
            "the first POST until every call settled, every agent report was taken and every "
            "event was delivered and recorded.",
            "",
            calls_text,
            "",
            f"Deliveries (expected {len(EVENTS)} per call: {', '.join(EVENTS)}); latency = "
            "arrival at the receiver - the event's `timestamp` (written with the change it "
            "reports, ms resolution, truncated).",
            "",
            deliveries_text,
            "",
            f"- events delivered: {len(every):,} in {plan.repeats} runs "
            f"({', '.join(f'{k} {v}' for k, v in sorted(by_type.items()))}); "
            f"events/s {rate.fmt('.1f')} (offered: {len(EVENTS)} x {RATE:g} = "
            f"{len(EVENTS) * RATE:g}/s)",
            "- latency ms (sandbox in the server's process): "
            f"p50 {p50.fmt('.1f')}, p99 {p99.fmt('.1f')}, max {lat_max.fmt('.1f')} "
            f"(min / median / max over repeats); lowest single latency {lowest:.1f} ms",
            f"- server CPU per call with / without webhooks: {cpu_ratio.fmt('.3f')}",
            f"- duplicate webhook-ids: {duplicates} (all {len(inbox.deliveries):,} deliveries, "
            f"warm-up included); refused signatures: {inbox.refused}; attempts not delivered "
            f"(server counter): {sum(h.not_delivered for h in hooked + split):.0f}; missing "
            f"events: {sum(h.missing for h in hooked + split)}; POST errors: "
            f"{sum(len(r.placed.errors) for r in plain + hooked + split)}; calls whose dialing / "
            f"answered / ended arrived out of order: {order_violations(every + split_every)}",
            f"- clocks: one machine. Receiver clock - ours = {offset[0] * 1000:+.2f} ms "
            f"(+/- {offset[1] * 1000:.2f} ms); call.dialing timestamps inside the window of "
            f"the POST that created them: {inside:,} of {total:,} (worst outside: {worst:.1f} "
            "ms); no latency below 0.",
            "",
            *(g.line() for g in goals),
            *why_late(hooked, plain),
            "",
            *waiting_lines(waiting),
            "",
            f"Not a goal, to tell the sender from a busy server: the same {RATE:g} calls/s with "
            "webhooks on a third server whose sandbox runs in its own process (real-LiveKit "
            "settings, as bench/http.py's split phase), so the server does only its own part:",
            "",
            split_text,
            "",
            f"With the sandbox out of the server's process: p99 "
            f"{_med([h.lat(99) for h in split]):.1f} ms, "
            f"{_med([h.share_over(P99_GOAL_MS) for h in split]):.1f}% over {P99_GOAL_MS:g} ms, "
            f"the server {_med([h.busy_cores for h in split]):.2f} cores busy (with it in process: "
            f"{_med([h.busy_cores for h in hooked]):.2f}). More than 4 deliveries due at once "
            "for one receiver come mostly with the sandbox's simulation in the server's event "
            "loop (a call's events are created in a burst there); up to 8 more per receiver wait "
            "in memory and start the moment a slot frees, the rest are given back for 0.2 s.",
            "",
            f"Server log problems: {len(problems)}" + "".join(f"\n    {p}" for p in problems),
        ],
    )


def why_late(hooked: list[Run], plain: list[Run]) -> list[str]:
    """What the figures say about the late deliveries and the slower intake, if any."""
    lines = []
    near = _med([h.share_over(DEFER_MS) for h in hooked])
    over = _med([h.share_over(P99_GOAL_MS) for h in hooked])
    behind = [h for h in hooked if h.tail_s > 1.0]
    if over >= 1.0 or behind:
        lines += [
            "",
            f"Why the p99: in the median repeat {over:.1f}% of deliveries took over "
            f"{P99_GOAL_MS:g} ms and {near:.1f}% over {DEFER_MS:g} ms. The sender claims every "
            "due delivery (up to 50), sends at most 4 at once to one receiver, holds 8 more of "
            "its deliveries in memory (each starts as a slot frees) and gives the rest back "
            "unattempted for HOST_BUSY_DEFER_S = 0.2 s (common/notify/deliveries.py `_claim`); "
            "the later events of those calls wait behind them (one call's events go out in "
            "order).",
        ]
        if behind:
            lines.append(
                f"In {len(behind)} of {len(hooked)} repeats the sender fell behind for good: "
                f"{_med([h.pacing_rate for h in behind]):.0f} events/s delivered while "
                f"{len(EVENTS) * RATE:g}/s were created, the last event "
                f"{_med([h.tail_s for h in behind]):.1f} s after the last call (median of those "
                "repeats), in a server already "
                f"{_med([h.busy_cores for h in hooked]):.2f} cores busy (one Python process, "
                "the sandbox in it) at this rate."
            )
    cpu_pct = (_med([h.cpu_ms / p.cpu_ms for p, h in zip(plain, hooked, strict=True)]) - 1) * 100
    post_plain = _med([percentile(r.placed.latencies_ms, 50) for r in plain])
    post_hooked = _med([percentile(r.placed.latencies_ms, 50) for r in hooked])
    if post_hooked > post_plain * 1.2:
        lines += [
            "",
            f"POST /calls/outbound p50 is {post_hooked:.1f} ms with webhooks vs {post_plain:.1f} "
            f"ms without, while the server's CPU per call changes by {cpu_pct:+.0f}%: the extra "
            "time is mostly waiting: the intake shares the event loop and the database "
            "thread with the sender's claims, posts and delivery records.",
        ]
    return lines


def waiting_lines(waiting: Waiting) -> list[str]:
    return [
        f"A send in flight costs no polling: a fourth server, idle, used {waiting.idle:.3f} "
        f"cores; with one call placed and its first delivery held {SLOW_RECEIVER_S:g} s by a "
        f"slow receiver (everything else done), {waiting.slow:.3f} cores (the sender waits for "
        "the send to end, a new event, or the next claimable delivery's time; before 9ab9b20 "
        "it claimed every millisecond: 0.135 cores; before b3b6584 it looked every 50 ms for "
        "the call's later events: 0.015-0.020 cores).",
        "",
        "Events waiting behind a retry cost no polling either: a fifth server whose receiver "
        f"refuses connections (each call's first event retried {BACKLOG_RETRY_S} s later, its "
        f"later events waiting behind it), {waiting.backlog_calls:,} calls placed, used "
        f"{waiting.backlog:.3f} cores while nothing was due (before b3b6584 it looked every "
        "50 ms, each look reading every waiting delivery: 0.052 cores with 1,000 calls, 0.095 "
        "with 2,000, 0.188 with 4,000).",
    ]


def run(plan: Plan) -> str:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with workdir("webhooks") as root:
        for sub in ("plain", "hooked", "slow", "down"):
            (root / sub).mkdir()
        receiver = start_receiver(root, secret)
        started: list[Served] = [receiver]
        try:
            plain = start_server(root / "plain")
            started.append(plain)
            hooked = start_server(
                root / "hooked",
                CALLS_WEBHOOK_URL=f"{receiver.url}/hooks/hooked",
                CALLS_WEBHOOK_SECRET=secret,
                CALLS_WEBHOOK_ALLOW_PRIVATE="1",
            )
            started.append(hooked)
            inbox = Inbox(receiver)
            note(f"webhooks: warming up ({plan.warmup} calls on each server)")
            run_plain(plain, plan.warmup)
            run_hooked(hooked, receiver, inbox, plan.warmup)
            plains: list[Run] = []
            hookeds: list[Run] = []
            for r in range(plan.repeats):
                for which in ("plain", "hooked") if r % 2 == 0 else ("hooked", "plain"):
                    note(f"webhooks: repeat {r + 1}/{plan.repeats}, {which}, {plan.calls} calls")
                    if which == "plain":
                        plains.append(run_plain(plain, plan.calls))
                    else:
                        hookeds.append(run_hooked(hooked, receiver, inbox, plan.calls))
            sandbox, split = start_split(
                root / "split",
                CALLS_WEBHOOK_URL=f"{receiver.url}/hooks/split",
                CALLS_WEBHOOK_SECRET=secret,
                CALLS_WEBHOOK_ALLOW_PRIVATE="1",
            )
            started += [sandbox, split]
            note(f"webhooks: sandbox in its own process, warming up ({plan.warmup} calls)")
            run_hooked(split, receiver, inbox, plan.warmup)
            splits: list[Run] = []
            for r in range(plan.split_repeats):
                note(f"webhooks: sandbox in its own process, {r + 1}/{plan.split_repeats}")
                splits.append(run_hooked(split, receiver, inbox, plan.calls))
            note("webhooks: one delivery held by a slow receiver")
            slow = start_server(
                root / "slow",
                CALLS_WEBHOOK_URL=f"{receiver.url}/hooks/slow",
                CALLS_WEBHOOK_SECRET=secret,
                CALLS_WEBHOOK_ALLOW_PRIVATE="1",
            )
            started.append(slow)
            idle, held = in_flight_cost(slow)
            note(f"webhooks: the receiver down, {plan.backlog} calls waiting for a retry")
            with socket.socket() as refusing:  # bound, never listening: refuses connections
                refusing.bind((HOST, 0))
                down = start_server(
                    root / "down",
                    CALLS_WEBHOOK_URL=f"http://{HOST}:{refusing.getsockname()[1]}/hooks",
                    CALLS_WEBHOOK_SECRET=secret,
                    CALLS_WEBHOOK_ALLOW_PRIVATE="1",
                    CALLS_WEBHOOK_RETRY_SCHEDULE=f"0,{BACKLOG_RETRY_S}",
                )
                started.append(down)
                backlog = backlog_cost(down, plan.backlog)
            waiting = Waiting(idle, held, plan.backlog, backlog)
            offset = inbox.clock_offset()
        finally:
            for served in reversed(started):
                served.stop()
        problems = [p for served in (plain, hooked, sandbox, split) for p in served.log_problems()]
    return report(plan, plains, hookeds, inbox, offset, problems, splits, waiting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--receiver-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver_port:
        serve_receiver(args.receiver_port)
        return
    emit(run(QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
