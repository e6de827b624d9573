"""SQLite vs PostgreSQL, and one vs two instances on PostgreSQL (issue 15).

    python -m bench.postgres [--quick]

Real processes throughout, side by side in one run: a throwaway PostgreSQL 15 cluster
(tests/pg_cluster.py: loopback port, fsync off, run as an unprivileged user when root), and
the sandbox in its own process (`python -m sandbox`, time scale 0) as a real LiveKit would be,
so the servers run with real-LiveKit settings (LIVEKIT_URL, a non-dev key pair, a trunk id).

(a) One server on SQLite vs one server on PostgreSQL (its own fresh database), each with its own
    sandbox: settled calls/s and server CPU per settled call at 10 and 50 clients, PostgreSQL's
    CPU (every process of the cluster, from /proc) beside it.
(b) One vs two instances on PostgreSQL at 50 clients. One instance is the server of (a); two
    are A and B on a second fresh database, one sandbox posting every LiveKit webhook to A, calls
    placed alternately on A and B (each agent report goes back to the server that placed the
    call): the real multi-instance shape without a load balancer. Total settled calls/s and
    the CPU of every process involved.

The load generator is an asyncio client in this process (closed loop: each client sends its
next call when the previous one was answered; request n goes to URL n mod the number of
servers). Settled = no call live in the database (all webhooks applied). Measurements alternate
within each repeat; min / median / max over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from bench.harness import (
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
    start_livekit,
    start_server,
    table,
    wait_settled,
)
from bench.harness import (
    workdir as bench_workdir,
)
from tests.pg_cluster import PostgresCluster

CALL = {"phone_number": "+14155550123", "name": "Bench"}
GOAL_RATIO = 1.6
MAX_S = 60.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")  # what /proc/stat and /proc/<pid>/stat count in


@dataclass(frozen=True)
class Plan:
    repeats: int
    calls: dict[int, int]  # calls per measurement, by clients
    warmup: int


FULL = Plan(repeats=3, calls={10: 500, 50: 900}, warmup=100)
QUICK = Plan(repeats=2, calls={10: 200, 50: 300}, warmup=40)


# ----------------------------------------------------------------------------- CPU


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


class PostgresCpu:
    """CPU of the whole cluster: the postmaster, its live children, and (through the
    postmaster's cutime/cstime) every child that exited and was reaped meanwhile."""

    def __init__(self, cluster: PostgresCluster) -> None:
        pid_file = cluster.data_dir / "postmaster.pid"
        self.postmaster = int(pid_file.read_text().split("\n", 1)[0])

    def seconds(self) -> float:
        fields = _stat_fields(self.postmaster)
        # After the command name, utime/stime/cutime/cstime are fields 14-17 (1-based).
        total = sum(int(f) for f in fields[11:15])
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = _stat_fields(int(entry.name))
                if int(child[1]) == self.postmaster:
                    total += int(child[11]) + int(child[12])
        return total / _CLK_TCK

    def processes(self) -> int:
        count = 1
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                count += int(_stat_fields(int(entry.name))[1]) == self.postmaster
        return count


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (every process, ours and anyone else's)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is already in user)
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / _CLK_TCK


# ----------------------------------------------------------------------------- load


@dataclass
class Load:
    ok: int = 0
    per_url: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    t_start: float = 0.0
    cpu_s: float = 0.0  # this process's CPU while it ran
    lock_waiters: list[int] = field(default_factory=list)  # sampled during the load


LOCK_WAITERS = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
)


async def sample_lock_waiters(dsn: str, into: list[int], stop: asyncio.Event) -> None:
    """Backends waiting for an advisory lock (admission's), every 50 ms while the load runs."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        while not stop.is_set():
            into.append(int(await conn.fetchval(LOCK_WAITERS)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
    finally:
        await conn.close(timeout=5)


async def closed_loop(urls: Sequence[str], clients: int, count: int, admin_dsn: str | None) -> Load:
    load = Load(per_url=[0] * len(urls))
    stop = asyncio.Event()
    sampler = (
        asyncio.create_task(sample_lock_waiters(admin_dsn, load.lock_waiters, stop))
        if admin_dsn
        else None
    )
    body = json.dumps(CALL).encode()
    headers = {"Content-Type": "application/json"}
    issued = 0
    connector = aiohttp.TCPConnector(limit=clients * len(urls))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        load.t_start = time.time()
        deadline = time.perf_counter() + MAX_S

        async def client() -> None:
            nonlocal issued
            while issued < count and time.perf_counter() < deadline:
                which = issued % len(urls)
                issued += 1
                sent = time.perf_counter()
                try:
                    async with session.post(urls[which], data=body, headers=headers) as resp:
                        answer = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    load.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status != 200:
                    load.errors.append(f"HTTP {status}: {answer[:200]!r}")
                    continue
                load.latencies_ms.append((time.perf_counter() - sent) * 1000)
                load.per_url[which] += 1
                load.ok += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    stop.set()
    if sampler is not None:
        await asyncio.wait_for(sampler, 15)
    return load


def run_load(urls: Sequence[str], clients: int, count: int, admin_dsn: str | None) -> Load:
    cpu0 = time.process_time()
    load = asyncio.run(closed_loop(urls, clients, count, admin_dsn))
    load.cpu_s = time.process_time() - cpu0
    return load


def metric(server: Served, name: str) -> float:
    _, body = http_get(server.url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        key, _, value = line.rpartition(" ")
        if key.partition("{")[0] == name:
            total += float(value)
    return total


def wait_reports(servers: Sequence[Served], quiet_s: float = 0.3, timeout: float = 15.0) -> float:
    """Until no server took an agent report for `quiet_s`; returns the wall time."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        now = sum(metric(s, "agent_reports_total") for s in servers)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return time.time()
        time.sleep(0.05)
    raise RuntimeError(f"agent reports still arriving after {timeout:.0f} s")


# ----------------------------------------------------------------------------- setups


@dataclass
class Setup:
    """Servers measured together, the sandbox serving them, and PostgreSQL if they use it."""

    name: str
    servers: list[Served]
    sandbox: Served
    pg: PostgresCpu | None
    admin_dsn: str | None = None  # to sample lock waits while the load runs

    @property
    def urls(self) -> list[str]:
        return [s.url + "/calls/outbound" for s in self.servers]


@dataclass(frozen=True)
class Sample:
    load: Load
    settled_rps: float
    server_ms: float  # all servers of the setup, per settled call
    pg_ms: float  # nan on SQLite
    sandbox_ms: float
    loadgen_ms: float
    ours_cores: float  # CPU of every process above / wall time, in cores
    machine_cores: float  # the whole machine's busy CPU / wall time, in cores
    server_cores: list[float]  # each server's own CPU / wall time

    @property
    def total_ms(self) -> float:
        pg = 0.0 if math.isnan(self.pg_ms) else self.pg_ms
        return self.server_ms + pg + self.sandbox_ms + self.loadgen_ms


def measure(setup: Setup, clients: int, count: int) -> Sample:
    servers0 = [cpu_seconds(s.pid) for s in setup.servers]
    sandbox0 = cpu_seconds(setup.sandbox.pid)
    pg0 = setup.pg.seconds() if setup.pg else math.nan
    machine0 = machine_busy_seconds()
    load = run_load(setup.urls, clients, count, setup.admin_dsn)
    settled = wait_settled(setup.servers[0])  # the database's count: every server's calls
    ended = wait_reports(setup.servers)
    wall = ended - load.t_start
    server_s = [cpu_seconds(s.pid) - c for s, c in zip(setup.servers, servers0, strict=True)]
    sandbox_s = cpu_seconds(setup.sandbox.pid) - sandbox0
    pg_s = setup.pg.seconds() - pg0 if setup.pg else math.nan
    machine_s = machine_busy_seconds() - machine0
    ok = max(load.ok, 1)
    ours = sum(server_s) + sandbox_s + (0.0 if math.isnan(pg_s) else pg_s) + load.cpu_s
    return Sample(
        load=load,
        settled_rps=load.ok / (settled - load.t_start),
        server_ms=sum(server_s) * 1000 / ok,
        pg_ms=pg_s * 1000 / ok,
        sandbox_ms=sandbox_s * 1000 / ok,
        loadgen_ms=load.cpu_s * 1000 / ok,
        ours_cores=ours / wall,
        machine_cores=machine_s / wall,
        server_cores=[s / wall for s in server_s],
    )


def start_setup(
    root: Path,
    name: str,
    instances: int,
    dsn: str | None,
    pg: PostgresCpu | None,
    admin_dsn: str | None = None,
) -> tuple[Setup, list[Served]]:
    """`instances` servers on `dsn` (None: SQLite) and a sandbox posting webhooks to the first."""
    base = root / name
    base.mkdir()
    ports = [free_port() for _ in range(instances)]
    started: list[Served] = []
    sandbox = start_livekit(base, ports[0])
    started.append(sandbox)
    try:
        servers = []
        for i, port in enumerate(ports):
            home = base / f"server{i}"
            home.mkdir()
            servers.append(
                start_server(
                    home,
                    port=port,
                    livekit=sandbox,
                    CALLS_RATE_LIMIT_PER_MIN="1000000",
                    CALLS_MAX_ACTIVE="1000000",
                    DATABASE_URL=dsn or "",  # empty: unset, SQLite
                )
            )
            started.append(servers[-1])
    except BaseException:
        for served in reversed(started):
            served.stop()
        raise
    return Setup(name, servers, sandbox, pg if dsn else None, admin_dsn), started


# ----------------------------------------------------------------------------- report


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _waiters(group: list[Sample]) -> float:
    """Median over repeats of the median number of backends waiting on an advisory lock."""
    return _med([_med([float(n) for n in s.load.lock_waiters]) for s in group])


def _spread(samples: list[Sample], attr: str, spec: str = ".1f") -> str:
    return Spread.of([float(getattr(s, attr)) for s in samples]).fmt(spec)


def store_table(samples: dict[tuple[str, int], list[Sample]]) -> str:
    rows = []
    for clients in (10, 50):
        sqlite, pg = samples[("sqlite", clients)], samples[("pg", clients)]
        ratio = Spread.of([p.settled_rps / s.settled_rps for s, p in zip(sqlite, pg, strict=True)])
        cpu_ratio = Spread.of([p.server_ms / s.server_ms for s, p in zip(sqlite, pg, strict=True)])
        for label, group in (("SQLite", sqlite), ("PostgreSQL", pg)):
            is_pg = group is pg
            rows.append(
                [
                    str(clients),
                    label,
                    _spread(group, "settled_rps"),
                    ratio.fmt(".2f") if is_pg else "1",
                    _spread(group, "server_ms", ".2f"),
                    cpu_ratio.fmt(".2f") if is_pg else "1",
                    _spread(group, "pg_ms", ".2f") if is_pg else "-",
                    f"{_med([s.sandbox_ms for s in group]):.2f}",
                    f"{_med([s.loadgen_ms for s in group]):.2f}",
                    f"{_med([percentile(s.load.latencies_ms, 50) for s in group]):.1f} / "
                    f"{_med([percentile(s.load.latencies_ms, 99) for s in group]):.1f}",
                    f"{_med([s.machine_cores for s in group]):.2f}",
                    f"{_waiters(group):.0f}" if is_pg else "-",
                    str(sum(len(s.load.errors) for s in group)),
                ]
            )
    return table(
        [
            "clients",
            "store",
            "settled calls/s",
            "PG / SQLite rate",
            "server CPU ms per call",
            "PG / SQLite server CPU",
            "PostgreSQL CPU ms per call",
            "sandbox CPU ms per call",
            "load generator CPU ms per call",
            "POST p50 / p99 ms",
            "machine busy, cores",
            "backends waiting on admission lock",
            "errors",
        ],
        rows,
    )


def instances_table(one: list[Sample], two: list[Sample]) -> tuple[str, Spread]:
    ratio = Spread.of([t.settled_rps / o.settled_rps for o, t in zip(one, two, strict=True)])
    rows = []
    for label, group in (("1", one), ("2 (A + B)", two)):
        split = " + ".join(
            f"{_med([float(s.load.per_url[i]) for s in group]):.0f}"
            for i in range(len(group[0].load.per_url))
        )
        cores = " + ".join(
            f"{_med([s.server_cores[i] for s in group]):.2f}"
            for i in range(len(group[0].server_cores))
        )
        rows.append(
            [
                label,
                split,
                _spread(group, "settled_rps"),
                ratio.fmt(".2f") if group is two else "1",
                _spread(group, "server_ms", ".2f"),
                cores,
                f"{_med([s.pg_ms for s in group]):.2f}",
                f"{_med([s.sandbox_ms for s in group]):.2f}",
                f"{_med([s.loadgen_ms for s in group]):.2f}",
                f"{_med([s.total_ms for s in group]):.2f}",
                f"{_med([s.ours_cores for s in group]):.2f} / "
                f"{_med([s.machine_cores for s in group]):.2f}",
                f"{_med([percentile(s.load.latencies_ms, 50) for s in group]):.1f} / "
                f"{_med([percentile(s.load.latencies_ms, 99) for s in group]):.1f}",
                f"{_waiters(group):.0f}",
                str(sum(len(s.load.errors) for s in group)),
            ]
        )
    text = table(
        [
            "instances",
            "calls placed on each",
            "settled calls/s",
            "two / one",
            "server CPU ms per call (all instances)",
            "each server busy, cores",
            "PostgreSQL CPU ms per call",
            "sandbox CPU ms per call",
            "load generator CPU ms per call",
            "all of them, ms per call",
            "busy cores: ours / whole machine",
            "POST p50 / p99 ms",
            "backends waiting on admission lock",
            "errors",
        ],
        rows,
    )
    return text, ratio


def limits(one: list[Sample], two: list[Sample], cores: int) -> list[str]:
    """What caps two instances on this machine, from the measured figures."""
    one_rate = _med([s.settled_rps for s in one])
    two_rate = _med([s.settled_rps for s in two])
    total = _med([s.total_ms for s in two])
    server = _med([s.server_ms for s in two])
    pg = _med([s.pg_ms for s in two])
    sandbox = _med([s.sandbox_ms for s in two])
    loadgen = _med([s.loadgen_ms for s in two])
    ceiling = cores * 1000 / total
    one_core = _med([s.server_cores[0] for s in one])
    two_cores = " and ".join(
        f"{_med([s.server_cores[i] for s in two]):.2f}" for i in range(len(two[0].server_cores))
    )
    p50 = _med([percentile(s.load.latencies_ms, 50) for s in one])
    return [
        "What limits two instances here:",
        "",
        f"1. The {cores} cores, shared by everything. With two instances our processes kept "
        f"{_med([s.ours_cores for s in two]):.2f} of them busy "
        f"({_med([s.machine_cores for s in two]):.2f} with everything on the machine). Each call "
        f"costs {total:.2f} ms of CPU in all (the servers {server:.2f}, PostgreSQL {pg:.2f}, the "
        f"sandbox {sandbox:.2f}, the load generator {loadgen:.2f}), so {cores} fully busy cores "
        f"cap the rate at {cores} x 1000 / {total:.2f} = {ceiling:.0f} calls/s, "
        f"{ceiling / one_rate:.2f}x one instance (measured: {two_rate:.0f} calls/s). One "
        f"instance alone already used {one_core:.2f} cores (one Python process: about one core "
        f"at most) for {one_rate:.0f} settled calls/s (POST p50 {p50:.0f} ms at 50 clients), and "
        "PostgreSQL and the sandbox used most of the other: a second instance found little idle "
        f"CPU (its servers: {two_cores} cores). PostgreSQL, the sandbox and the load generator "
        f"take {(pg + sandbox + loadgen) / total * 100:.0f}% of the CPU per call; in production "
        "they run elsewhere and each instance has its own cores, so 1.6x cannot be shown on "
        "this machine.",
        "2. Admission is serialised across instances: `create_call` takes "
        "`pg_advisory_xact_lock(7246001)` before its limit check (common/storage/programs.py "
        "`create_call`, `admission_lock`) and holds it until the call's transaction commits "
        "(call row, rate bucket, timeline entry, events: one awaited round trip each). While "
        f"the load ran a median of {_waiters(one):.0f} (one instance) and {_waiters(two):.0f} "
        "(two) backends waited for it: not the limit here, but where CPU is not, it caps the "
        "total admission rate at one transaction at a time, whatever the number of instances.",
    ]


def run(plan: Plan) -> str:
    cores = len(os.sched_getaffinity(0))
    samples: dict[tuple[str, int], list[Sample]] = {}
    with bench_workdir("postgres") as root, PostgresCluster() as cluster:
        pg = PostgresCpu(cluster)
        tag = uuid.uuid4().hex[:8]
        one_dsn = cluster.create_database(f"bench_one_{tag}")
        two_dsn = cluster.create_database(f"bench_two_{tag}")
        started: list[Served] = []
        try:
            sqlite, procs = start_setup(root, "sqlite", 1, None, None)
            started += procs
            single, procs = start_setup(root, "pg_one", 1, one_dsn, pg, cluster.dsn())
            started += procs
            double, procs = start_setup(root, "pg_two", 2, two_dsn, pg, cluster.dsn())
            started += procs
            for setup in (sqlite, single, double):
                note(f"postgres: warming up {setup.name} ({plan.warmup} calls)")
                measure(setup, 10, plan.warmup)
            for r in range(plan.repeats):
                steps = [
                    (sqlite, "sqlite", 10),
                    (single, "pg", 10),
                    (sqlite, "sqlite", 50),
                    (single, "pg", 50),
                    (double, "two", 50),
                ]
                if r % 2:
                    steps = [steps[1], steps[0], steps[4], steps[3], steps[2]]
                for setup, key, clients in steps:
                    count = plan.calls[clients]
                    note(
                        f"postgres: repeat {r + 1}/{plan.repeats}, {setup.name}, {clients} clients"
                    )
                    samples.setdefault((key, clients), []).append(measure(setup, clients, count))
            pg_processes = pg.processes()
        finally:
            for served in reversed(started):
                served.stop()
        problems = [p for s in started for p in s.log_problems()]
    store_text = store_table(samples)
    one, two = samples[("pg", 50)], samples[("two", 50)]
    instances_text, ratio = instances_table(one, two)
    goal = Goal(
        "settled calls/s, two instances / one (PostgreSQL, 50 clients)",
        ratio.mid,
        GOAL_RATIO,
        ">=",
        "x",
        ratio,
    )
    return section(
        "SQLite vs PostgreSQL, one vs two instances (bench/postgres.py)",
        [
            f"Machine: {machine()}. Real processes: servers (`server.py`), the sandbox in its own "
            "process (time scale 0, real-LiveKit settings), a throwaway PostgreSQL 15 cluster "
            f"(tests/pg_cluster.py, fsync off, {pg_processes} processes at the end), each "
            "setup's servers on their own fresh database; DATABASE_POOL_SIZE default (10). "
            f"{plan.repeats} repeats, measurements alternating within each, min / median / max "
            f"over repeats. Body `{json.dumps(CALL)}`; {plan.calls[10]} calls at 10 clients, "
            f"{plan.calls[50]} at 50. CPU from /proc from the first POST until every call "
            "settled and the last agent report was taken; PostgreSQL's is every process of the "
            "cluster (postmaster, backends, background workers, and the exited ones through "
            "the postmaster's children time), busy while that one measurement ran (the idle "
            "servers of the other setups add their reaper's queries).",
            "",
            "(a) One server, SQLite vs PostgreSQL (each with its own sandbox):",
            "",
            store_text,
            "",
            "(b) One vs two instances on one PostgreSQL at 50 clients: one sandbox posts every "
            "LiveKit webhook to A, calls are placed alternately on A and B, each agent report "
            "goes to the server that placed the call (no load balancer):",
            "",
            instances_text,
            "",
            goal.line(),
            "",
            *limits(one, two, cores),
            "",
            f"Server log problems: {len(problems)}" + "".join(f"\n    {p}" for p in problems),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    emit(run(QUICK if args.quick else FULL))


if __name__ == "__main__":
    main()
