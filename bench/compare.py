"""Server CPU per placed and settled call, for several variants of the server side by side.

    python -m bench.compare                                   # the working tree alone
    python -m bench.compare --base 910fe35                    # a git revision next to it
    python -m bench.compare --base 910fe35 \\
        --patch no_group_commit=bench/variants/no_group_commit.py \\
        --patch no_document_reuse=bench/variants/no_document_reuse.py \\
        --patch no_line_reuse=bench/variants/no_line_reuse.py \\
        --patch indent_json=bench/variants/indent_json.py \\
        --patch no_db_batching=bench/variants/no_db_batching.py \\
        --patch no_agent_reports=bench/variants/no_agent_reports.py
    python -m bench.compare --quick ...                       # about 2 minutes

With those 8 variants a full run takes about 6.5 minutes here (2 cores), `--quick` about 2.
`--repeats N` overrides the plan's repeats, `--no-live` skips the many-live-calls table,
`--keep` keeps the work directory (every process's log) and names it on stderr.

`--base-sandbox`: the base's calls are played by the base tree's own sandbox (by default every
variant's are played by the working tree's): for a change of what our agent sends (since
264797d the sandbox plays the agent with the agent's own sender, several reports to a POST;
an older server answers such a POST 400 and the sender sends its reports again one by one).

`--patch NAME` alone means `--patch NAME=bench/variants/NAME.py`; `--all-patches` adds every
patch of bench/variants/. The tables go to stdout (markdown), progress to stderr. The exit
status is 1 if any variant's calls got a non-200 answer, did not settle, or ended in another
status than expected (its server log's problems are printed), 2 on a usage error.

Variants (the first one is the reference of the "vs" column; "current" is always measured):

- `--base REV` (label: the revision as given): `git worktree add --detach` of REV in a temp
  directory (removed at the end); its own `server.py` runs from there with the same .venv
  interpreter. The project is installed in the venv in editable mode (a meta path finder that
  maps `common`, `handlers`, ... to /work/main); the launcher removes that finder and puts the
  tree first on sys.path, so nothing is imported from the main checkout, and it prints which
  `common` and `server` it imported: the run stops if they are not the tree's.
- `current`: the working tree (/work/main), copied at the start of the run (tracked and
  untracked files that git does not ignore) to a temp directory, so that every server started
  later runs the same code while others keep editing the checkout. The sandbox and the
  hello-world server run from this copy too, for every variant.
- `--patch NAME=FILE.py`: that same copy with FILE.py executed first (it monkeypatches one
  fast path away), then `server.main()`. Ready ones in bench/variants/:
  - `no_group_commit`: ConfigStore async writes are not grouped; every caller of `_submit`
    makes its own durable write (read, mutate, encode, fsync, rename, directory fsync).
  - `no_document_reuse`: the writer never reuses the document of its last write
    (`_current_document` always parses config.json); lines of unchanged records cannot be
    reused either then (that needs the very same record objects).
  - `no_line_reuse`: `_encode` never reuses the lines of unchanged records (known=None): every
    live call's record is encoded on every write.
  - `indent_json`: config.json encoded with `json.dumps(doc, indent=2, ensure_ascii=False)`, as
    the seed did (pure-Python encoder, whole document, every write); reads still work
    (`_record_from_line` does not trust that framing and parses the whole document).
  - `no_db_batching`: the SQLite worker thread wakes the event loop once per result (its own
    `call_soon_threadsafe`) instead of once per batch of results, and runs each write in a
    transaction of its own (no shared COMMIT).
  - `no_agent_reports` (not a fast path; a like-for-like check against older revisions): the
    dispatch metadata carries no `report_url`, so the sandbox, playing our agent, posts no
    agent reports (since b80321d about 7 per answered call): the server gets the traffic
    910fe35 got, the intake request and LiveKit's webhooks.
  - `default_gc`: Python's default garbage collection thresholds (700, 10, 10) instead of the
    server's (`server.collect_garbage_less_often`: 7,000 for the young generation).
  - `exchanges_floor`, `exchanges_floor_verified`, `exchanges_floor_durable` (measurements,
    not fast paths): a bare server that only answers a call's exchanges (the intake with its
    two Twirp calls, the webhooks, the report POSTs), then with their signature checks, then
    with the fewest group-committed fsyncs before answering: what a call costs a server that
    does nothing else under issue 17's rules (see bench/variants/exchanges_floor.py).

What is measured. Every variant runs as `server.py` in its own process with its own fresh work
directory (config.json, calls.db), configured for a real LiveKit (`LIVEKIT_URL`, non-dev API
key and secret, `SIP_OUTBOUND_TRUNK_ID=ST_bench`, so numbers must be valid ones), talking to
its own LiveKit sandbox in another process (`python -m sandbox`, the working tree's, the same
for every variant) that posts the calls' signed webhooks back to it. Limits are out of the way
(`CALLS_MAX_ACTIVE` and `CALLS_RATE_LIMIT_PER_MIN` 100000), `CALLS_SETTLE_GRACE_S=0`,
`REAPER_INTERVAL_S=3600`, `LOG_LEVEL=WARNING` for every server and for the hello-world
baseline (`bench.hello` served the same way, one for the whole run). Load comes from
`bench.loadgen` (its own process).

1. Standard: sandbox at time scale 0, calls to +14155557705 (answered, then the callee hangs
   up: completed). Each server is warmed up with 50 calls first. Then, R times, for each
   concurrency and each variant in turn (the order rotates each repeat, so drift on a noisy
   machine hits all variants alike): hello-world CPU per request at that concurrency, then N
   calls at that concurrency, wait until the server reports no live call (all webhooks
   applied), and take the server's CPU per call (the sum over its threads of
   /proc/PID/task/TID/schedstat, nanoseconds; /proc/PID/stat counts 10 ms ticks, too coarse
   for a hello-world measurement); the sandbox's CPU per call is reported too but not
   counted. The server's /metrics is polled to see the
   calls settle (with back-off, a few polls per measurement).
2. Many live calls: a second server per variant, its sandbox at time scale 1 and
   `CALL_RINGING_TIMEOUT_S=600`; 300 calls to +14155550480 (rings until the ringing timeout)
   stay live, so config.json holds 300 records. Then, R times, for each variant in turn: hello
   CPU at 10 clients, then more calls of the same kind at 10 clients, and the server's CPU per
   additional placed call (including the webhooks LiveKit posts at once: room started,
   participant joined). Every config write now rewrites 300+ records. The additional calls
   are hung up afterwards (outside the measurement), so every measurement starts at 300.

Reported per variant: median (min..max over repeats) of server CPU ms per call, the same as a
multiple of hello-world CPU per request (measured just before, same concurrency), settled (or
placed) calls/s, the sandbox's CPU per call, and per-repeat paired ratios against the first
variant and against `current` (paired: the two were measured in the same repeat). A last
table gives the requests each server answered per placed call, by route (from its /metrics),
so that a difference in CPU per call can be told from a difference in what a call is.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from bench.harness import (
    HOST,
    PYTHON,
    ROOT,
    LoadResult,
    Served,
    cpu_seconds,
    emit,
    free_port,
    http_get,
    live_calls,
    machine,
    note,
    run_load,
    table,
)

API_KEY = "APIbenchcompare"
API_SECRET = "bench-compare-secret-" + "s" * 32
TRUNK_ID = "ST_bench"
CURRENT = "current"
VARIANTS_DIR = ROOT / "bench" / "variants"

SETTLED_NUMBER = "+14155557705"  # answered after 2 s, the callee hangs up 5 s later: completed
RINGING_NUMBER = "+14155550480"  # rings until the ringing timeout: stays live
EXPECTED_STATUS = "completed"
LIVE_STATUSES = ("dialing", "ringing", "in_progress")
LIVE_CLIENTS = 10
LIVE_RINGING_TIMEOUT_S = 600

MAX_S = 60.0  # bound of every load generator run
SETTLE_TIMEOUT_S = 60.0
TRAIL_S = 0.1  # after settling, for the last outbox events to be dispatched
LIVE_TRAIL_S = 0.5  # after extra ringing calls: their first webhooks land
FILL_TIMEOUT_S = 60.0
CLEANUP_TIMEOUT_S = 60.0
GIT_TIMEOUT_S = 120.0
HTTP_TIMEOUT_S = 10.0


def call_body(number: str) -> str:
    return json.dumps(
        {
            "phone_number": number,
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

# Run as `python -c LAUNCHER [args]` with PYTHONPATH = BENCH_TREE = the variant's tree and
# BENCH_MAIN = "server" (server.main()) or "sandbox" (python -m sandbox args).
LAUNCHER = """
import os, runpy, sys
tree = os.environ["BENCH_TREE"]
sys.path.insert(0, tree)
# The venv has the project installed in editable mode: a meta path finder mapping `common`,
# `handlers`, ... to the main checkout. Without it, a module missing from `tree` fails loudly
# instead of coming from the main checkout.
def _ours(obj):
    return not str(getattr(obj, "__module__", "")).startswith("__editable__")
sys.meta_path[:] = [f for f in sys.meta_path if _ours(f)]
sys.path_hooks[:] = [h for h in sys.path_hooks if _ours(h)]
sys.path_importer_cache.clear()
patch = os.environ.get("BENCH_PATCH", "")
if patch:
    with open(patch, encoding="utf-8") as fh:
        code = compile(fh.read(), patch, "exec")
    exec(code, {"__name__": "__bench_patch__", "__file__": patch})
main = os.environ["BENCH_MAIN"]
import common
if main == "server":
    import server
    where = server.__file__
else:
    import sandbox
    where = sandbox.__file__
print(
    f"bench-launcher: common={common.__file__} {main}={where} patch={patch or '-'}",
    file=sys.stderr,
    flush=True,
)
if main == "server":
    server.main()
else:
    sys.argv[0] = "sandbox"
    runpy.run_module("sandbox", run_name="__main__", alter_sys=True)
"""

# `bench.hello` with the servers' log level (it configures logging from Settings() defaults).
HELLO_LAUNCHER = """
import logging, sys
import bench.hello as hello
_configure = hello.configure_logging
level = sys.argv.pop(2)
def configure(settings):
    _configure(settings)
    logging.getLogger().setLevel(level)
hello.configure_logging = configure
hello.main()
"""
LOG_LEVEL = "WARNING"

# Variables of the servers' settings a developer's shell must not change.
_SETTING_PREFIXES = (
    "HOST",
    "PORT",
    "LOG_",
    "CONFIG_",
    "CALLS_",
    "CALL_",
    "LIVEKIT_",
    "SIP_",
    "AGENT_",
    "REAPER_",
    "METRICS_",
    "READYZ_",
    "WEBHOOK_",
    "SANDBOX_",
    "OPENAI_",
    "DEEPGRAM_",
    "CARTESIA_",
    "PYTHON",
)


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Plan:
    repeats: int
    clients: tuple[int, ...]
    calls: dict[int, int]  # calls per measurement, by concurrency
    hello: dict[int, int]  # hello-world requests per measurement, by concurrency
    warmup: int
    live_fill: int
    live_extra: int
    live_hello: int


FULL = Plan(
    repeats=4,
    clients=(1, 50),
    calls={1: 150, 50: 300},
    hello={1: 1500, 50: 3000},
    warmup=50,
    live_fill=300,
    live_extra=100,
    live_hello=1500,
)
QUICK = Plan(
    repeats=2,
    clients=(1, 50),
    calls={1: 60, 50: 150},
    hello={1: 800, 50: 1500},
    warmup=50,
    live_fill=300,
    live_extra=50,
    live_hello=800,
)


# ----------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    label: str
    tree: Path
    what: str  # how the tree was made, for the report
    patch: Path | None = None
    sandbox: Path | None = None  # the tree whose sandbox plays its calls (None: current's)

    def describe(self) -> str:
        return f"{self.what} + {_rel(self.patch)}" if self.patch else self.what


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(ROOT))
    return str(path)


def parse_patch(spec: str) -> tuple[str, Path]:
    """`NAME=FILE.py`, or `NAME` for bench/variants/NAME.py."""
    name, sep, file = spec.partition("=")
    name = name.strip()
    path = Path(file.strip()) if sep else VARIANTS_DIR / f"{name}.py"
    if not name or name == CURRENT:
        raise ValueError(f"--patch {spec!r}: a name other than {CURRENT!r} is needed")
    if not path.is_file():
        raise ValueError(f"--patch {spec!r}: no file {path}")
    return name, path.resolve()


def all_patches() -> list[str]:
    return sorted(p.stem for p in VARIANTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def worktree(rev: str, parent: Path) -> Iterator[tuple[Path, str]]:
    """A detached worktree of `rev` under `parent` and its commit; removed at the end."""
    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    path = parent / f"tree-{commit[:12]}"
    git("worktree", "add", "--detach", str(path), commit)
    try:
        yield path, commit
    finally:
        try:
            git("worktree", "remove", "--force", str(path))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            note(f"could not remove worktree {path}: {exc}")


def snapshot(dest: Path) -> str:
    """Copy the working tree (tracked and untracked, not ignored files) to `dest`.

    Others may be editing the working tree while this runs: every `current` server (and every
    patched one, and every sandbox) runs this one copy, so all of them run the same code,
    whenever they start. Returns what the copy is, for the report.
    """
    names = git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    copied = 0
    digest = hashlib.sha256()
    for name in sorted(names):
        source = ROOT / name
        if not name or not source.is_file():  # deleted in the working tree
            continue
        data = source.read_bytes()
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        shutil.copymode(source, target)
        copied += 1
        digest.update(name.encode() + b"\0" + data + b"\0")
    head = git("rev-parse", "--short", "HEAD").strip()
    changed = len([ln for ln in git("status", "--porcelain").splitlines() if ln.strip()])
    stamp = time.strftime("%H:%M:%S")
    return (
        f"working tree at {stamp}: HEAD {head} + {changed} changed/new paths "
        f"({copied} files, content sha256 {digest.hexdigest()[:12]})"
    )


# ----------------------------------------------------------------------------- processes


class Failed(Exception):
    """A variant's calls errored or did not settle; it is measured no further."""


def launch(
    name: str, tree: Path, main: str, args: Sequence[str], env: dict[str, str], cwd: Path
) -> Served:
    """`python -c LAUNCHER args` running `main` ("server" or "sandbox") from `tree` only."""
    port = int(env["PORT"]) if main == "server" else int(args[args.index("--port") + 1])
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    full = base | {"PYTHONPATH": str(tree), "BENCH_TREE": str(tree), "BENCH_MAIN": main} | env
    return Served(name, [PYTHON, "-c", LAUNCHER, *args], port, full, cwd)


def server_env(workdir: Path, port: int, livekit_url: str, **extra: str) -> dict[str, str]:
    return {
        "HOST": HOST,
        "PORT": str(port),
        "LOG_LEVEL": LOG_LEVEL,
        "LOG_FORMAT": "text",
        "CONFIG_PATH": str(workdir / "config.json"),
        "CALLS_DB_PATH": str(workdir / "calls.db"),
        "LIVEKIT_URL": livekit_url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "SIP_OUTBOUND_TRUNK_ID": TRUNK_ID,
        "CALLS_MAX_ACTIVE": "100000",
        "CALLS_RATE_LIMIT_PER_MIN": "100000",
        "CALLS_SETTLE_GRACE_S": "0",
        "REAPER_INTERVAL_S": "3600",
        "METRICS_REUSE_S": "0",  # settling is watched on /metrics: its counts as they are
        **extra,
    }


@dataclass
class Pair:
    """One variant's server and the sandbox (its LiveKit) in their own processes."""

    variant: Variant
    workdir: Path
    server: Served
    sandbox: Served
    imported: str  # the launcher's line: which common/server were imported
    placed: int = 0
    fill_ids: frozenset[str] = frozenset()
    failures: list[str] = field(default_factory=list)
    routes: dict[str, float] = field(default_factory=dict)  # requests served, by route

    @property
    def config(self) -> Path:
        return self.workdir / "config.json"

    def stop(self) -> None:
        for proc in (self.server, self.sandbox):
            try:
                proc.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                note(f"{self.variant.label}: stopping {proc.name}: {exc}")


def launcher_line(served: Served, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in served.log_path.read_text(errors="replace").splitlines():
            if line.startswith("bench-launcher: "):
                return line
        time.sleep(0.05)
    raise RuntimeError(f"no launcher line in {served.log_path}")


def check_imports(label: str, tree: Path, line: str) -> None:
    """`common` and the main module were imported from `tree`, not from elsewhere."""
    names = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    root = tree.resolve()
    for name in ("common", "server", "sandbox"):
        if name in names and not Path(names[name]).resolve().is_relative_to(root):
            raise RuntimeError(f"{label}: {name} imported from {names[name]}, not from {root}")


def start_sandbox(tree: Path, workdir: Path, webhook_url: str, time_scale: float) -> Served:
    """`python -m sandbox` of `tree` in its own process, as a real LiveKit would be."""
    args = ["--port", str(free_port()), "--webhook-url", webhook_url]
    args += ["--time-scale", str(time_scale)]
    env = {"LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET}
    sandbox = launch("sandbox", tree, "sandbox", args, env, workdir)
    try:
        sandbox.wait_ready("/")
        check_imports("sandbox", tree, launcher_line(sandbox))
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


def start_pair(
    variant: Variant, sandbox_tree: Path, workdir: Path, *, time_scale: float, **extra: str
) -> Pair:
    workdir.mkdir(parents=True)
    port = free_port()
    webhook_url = f"http://{HOST}:{port}/webhooks/livekit"
    sandbox = start_sandbox(sandbox_tree, workdir, webhook_url, time_scale)
    try:
        env = server_env(workdir, port, sandbox.url, **extra)
        env["BENCH_PATCH"] = str(variant.patch) if variant.patch else ""
        server = launch("server", variant.tree, "server", [], env, workdir)
        try:
            server.wait_ready()
            line = launcher_line(server)
            check_imports(variant.label, variant.tree, line)
        except BaseException:
            server.stop()
            raise
    except BaseException:
        sandbox.stop()
        raise
    return Pair(variant, workdir, server, sandbox, line)


def start_hello(tree: Path, workdir: Path) -> Served:
    """`bench.hello` of `tree` (the working tree's copy), at the servers' log level."""
    port = free_port()
    argv = [PYTHON, "-c", HELLO_LAUNCHER, str(port), LOG_LEVEL]
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    served = Served("hello", argv, port, env | {"PYTHONPATH": str(tree)}, workdir)
    served.wait_ready()
    return served


def problems(served: Served, limit: int = 8) -> list[str]:
    """ERROR / CRITICAL lines and tracebacks in a process's log."""
    lines = served.log_path.read_text(errors="replace").splitlines()
    bad = [
        ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln or ln.startswith("Traceback")
    ]
    return bad[:limit]


# ----------------------------------------------------------------------------- CPU


def thread_cpu_ns(pid: int) -> dict[int, int]:
    """Each live thread's CPU time so far (ns, /proc/PID/task/TID/schedstat), by thread id."""
    times: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            times[int(task.name)] = int((task / "schedstat").read_text().split()[0])
    return times


@dataclass(frozen=True)
class CpuMark:
    """A process's CPU time at one moment, to the nanosecond where possible.

    /proc/PID/stat counts in clock ticks (10 ms here: a hello-world measurement is a few
    ticks), so the per-thread run times are summed instead. A thread that ended in between
    takes its time with it; then (rarely: our processes keep their threads) the tick count
    is used for that window.
    """

    pid: int
    threads: dict[int, int]
    ticks: float

    @classmethod
    def take(cls, pid: int) -> CpuMark:
        return cls(pid, thread_cpu_ns(pid), cpu_seconds(pid))

    def seconds(self) -> float:
        """CPU seconds the process used since this mark."""
        now = thread_cpu_ns(self.pid)
        if any(tid not in now for tid in self.threads):
            return cpu_seconds(self.pid) - self.ticks
        return sum(ns - self.threads.get(tid, 0) for tid, ns in now.items()) / 1e9


# ----------------------------------------------------------------------------- load


def spec(url: str, clients: int, count: int, number: str) -> dict[str, Any]:
    return {
        "url": url,
        "concurrency": clients,
        "count": count,
        "max_s": MAX_S,
        "body": call_body(number),
        "headers": JSON_HEADERS,
    }


def hello_load(hello: Served, clients: int, count: int) -> tuple[float, float]:
    """Hello-world's CPU ms per request and requests/s at `clients`."""
    cpu = CpuMark.take(hello.pid)
    result = run_load(spec(hello.url + "/", clients, count, SETTLED_NUMBER))
    if result.errors:
        raise RuntimeError(f"hello-world errors: {result.error_samples}")
    return cpu.seconds() * 1000 / max(result.ok, 1), result.rps


def place(pair: Pair, clients: int, count: int, number: str) -> LoadResult:
    result = run_load(spec(pair.server.url + "/calls/outbound", clients, count, number))
    pair.placed += result.ok
    if result.errors:
        raise Failed(
            f"{result.errors} of {count} calls refused or failed at {clients} clients: "
            f"{result.error_samples}"
        )
    return result


def wait_live(pair: Pair, target: int, timeout: float) -> tuple[float, int]:
    """Wait (polling /metrics, with back-off) until at most `target` calls are live."""
    deadline = time.monotonic() + timeout
    delay, polls = 0.005, 0
    while True:
        polls += 1
        live = live_calls(pair.server)
        if live <= target:
            return time.time(), polls
        if time.monotonic() > deadline:
            raise Failed(f"{live} calls still live after {timeout:.0f} s (expected {target})")
        if pair.server.proc.poll() is not None:
            raise Failed(f"server exited ({pair.server.proc.returncode})")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)


def config_records(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        calls = json.loads(path.read_bytes()).get("calls", {})
        return len(calls) if isinstance(calls, dict) else -1
    return -1


def wait_records(pair: Pair, target: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (records := config_records(pair.config)) != target:
        if time.monotonic() > deadline:
            raise Failed(f"config.json holds {records} records after {timeout:.0f} s, not {target}")
        time.sleep(0.05)


def api(pair: Pair, method: str, path: str) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 (loopback)
        pair.server.url + path, data=b"" if method == "POST" else None, method=method
    )
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except urllib.error.HTTPError as exc:
        raise Failed(f"{method} {path}: HTTP {exc.code} {exc.read()[:200]!r}") from exc


def live_ids(pair: Pair) -> set[str]:
    """Ids of the live calls, from GET /calls?status=... (at most 500 per status)."""
    ids: set[str] = set()
    for status in LIVE_STATUSES:
        doc = api(pair, "GET", f"/calls?status={status}&limit=500")
        ids.update(str(c["call_id"]) for c in doc["calls"])
    return ids


def requests_by_route(pair: Pair) -> dict[str, float]:
    """Requests the server answered, "METHOD route code" (from /metrics), but GETs (ours)."""
    _, body = http_get(pair.server.url + "/metrics")
    counts: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("http_requests_total{"):
            text, _, value = line.rpartition(" ")
            labels = dict(re.findall(r'(\w+)="([^"]*)"', text))
            if labels.get("method") == "GET":
                continue
            key = f"{labels.get('method')} {labels.get('route')} {labels.get('code')}"
            counts[key] = counts.get(key, 0.0) + float(value)
    return counts


def statuses(pair: Pair) -> dict[str, int]:
    """Calls by status, from the server's /metrics (statuses with none left out: /metrics
    gives every status, 0 when none)."""
    _, body = http_get(pair.server.url + "/metrics")
    counts: dict[str, int] = {}
    for line in body.decode().splitlines():
        if line.startswith("calls{status="):
            labels, _, value = line.rpartition(" ")
            status = labels.split('"')[1]
            counts[status] = counts.get(status, 0) + int(float(value))
    return {status: n for status, n in counts.items() if n}


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Sample:
    cpu_ms: float  # server CPU per call
    hello_cpu_ms: float  # hello-world CPU per request, same concurrency, just before
    sandbox_cpu_ms: float
    rate: float  # settled calls/s (standard) or placed calls/s (many live)
    p50: float
    p99: float
    polls: int = 0
    records: int = 0  # config.json records before the measurement (many live)
    config_bytes: int = 0
    hello_rps: float = math.nan  # hello-world requests/s, same measurement as hello_cpu_ms

    @property
    def multiple(self) -> float:
        return self.cpu_ms / self.hello_cpu_ms if self.hello_cpu_ms > 0 else math.nan


# samples[scenario][label][repeat]; scenario is the concurrency (standard) or "live"
Samples = dict[str, dict[str, dict[int, Sample]]]


def standard_sample(pair: Pair, hello: Served, clients: int, plan: Plan) -> Sample:
    h, hello_rps = hello_load(hello, clients, plan.hello[clients])
    server, sandbox = CpuMark.take(pair.server.pid), CpuMark.take(pair.sandbox.pid)
    result = place(pair, clients, plan.calls[clients], SETTLED_NUMBER)
    settled_at, polls = wait_live(pair, 0, SETTLE_TIMEOUT_S)
    time.sleep(TRAIL_S)
    n = max(result.ok, 1)
    return Sample(
        cpu_ms=server.seconds() * 1000 / n,
        hello_cpu_ms=h,
        sandbox_cpu_ms=sandbox.seconds() * 1000 / n,
        rate=result.ok / max(settled_at - result.t_start, 1e-9),
        p50=result.p(50),
        p99=result.p(99),
        polls=polls,
        hello_rps=hello_rps,
    )


def live_sample(pair: Pair, hello: Served, plan: Plan) -> Sample:
    records = config_records(pair.config)
    size = pair.config.stat().st_size
    h, hello_rps = hello_load(hello, LIVE_CLIENTS, plan.live_hello)
    server, sandbox = CpuMark.take(pair.server.pid), CpuMark.take(pair.sandbox.pid)
    result = place(pair, LIVE_CLIENTS, plan.live_extra, RINGING_NUMBER)
    time.sleep(LIVE_TRAIL_S)
    n = max(result.ok, 1)
    sample = Sample(
        cpu_ms=server.seconds() * 1000 / n,
        hello_cpu_ms=h,
        sandbox_cpu_ms=sandbox.seconds() * 1000 / n,
        rate=result.rps,
        p50=result.p(50),
        p99=result.p(99),
        records=records,
        config_bytes=size,
        hello_rps=hello_rps,
    )
    hang_up_extras(pair)
    return sample


def fill(pair: Pair, plan: Plan) -> None:
    place(pair, LIVE_CLIENTS, plan.live_fill, RINGING_NUMBER)
    wait_records(pair, plan.live_fill, FILL_TIMEOUT_S)
    ids = live_ids(pair)
    if len(ids) != plan.live_fill:
        raise Failed(f"{len(ids)} live calls after placing {plan.live_fill}")
    pair.fill_ids = frozenset(ids)


def hang_up_extras(pair: Pair) -> None:
    """Hang up every live call but the first 300; wait until they settled and left config.json."""
    extras = sorted(live_ids(pair) - pair.fill_ids)
    for call_id in extras:
        api(pair, "POST", f"/calls/{call_id}/hangup")
    wait_live(pair, len(pair.fill_ids), CLEANUP_TIMEOUT_S)
    wait_records(pair, len(pair.fill_ids), CLEANUP_TIMEOUT_S)


def rotated(pairs: Sequence[Pair], r: int) -> list[Pair]:
    k = r % len(pairs) if pairs else 0
    return [p for p in [*pairs[k:], *pairs[:k]] if not p.failures]


def measure(
    pair: Pair, what: str, sample: Callable[[], Sample], samples: Samples, key: str, r: int
) -> None:
    """Run `sample()`; a Failed marks the variant failed (measured no further)."""
    try:
        samples.setdefault(key, {}).setdefault(pair.variant.label, {})[r] = sample()
    except Failed as exc:
        pair.failures.append(f"{what}: {exc}")
        note(f"{pair.variant.label}: FAILED {what}: {exc}")


def standard_phase(
    variants: Sequence[Variant],
    sandbox_tree: Path,
    hello: Served,
    plan: Plan,
    root: Path,
    samples: Samples,
) -> list[Pair]:
    pairs: list[Pair] = []
    try:
        for i, v in enumerate(variants):
            note(f"standard: starting {v.label} ({v.describe()})")
            tree = v.sandbox or sandbox_tree
            pairs.append(start_pair(v, tree, root / f"standard-{i}", time_scale=0.0))
        for pair in pairs:
            note(f"standard: warming up {pair.variant.label} ({plan.warmup} calls)")
            try:
                place(pair, 10, plan.warmup, SETTLED_NUMBER)
                wait_live(pair, 0, SETTLE_TIMEOUT_S)
            except Failed as exc:
                pair.failures.append(f"warm-up: {exc}")
        run_load(spec(hello.url + "/", 10, 500, SETTLED_NUMBER))
        for r in range(plan.repeats):
            for c in plan.clients:
                for pair in rotated(pairs, r):
                    label = pair.variant.label
                    note(f"standard: repeat {r + 1}/{plan.repeats}, {c} clients, {label}")
                    measure(
                        pair,
                        f"{c} clients, repeat {r + 1}",
                        functools.partial(standard_sample, pair, hello, c, plan),
                        samples,
                        str(c),
                        r,
                    )
        for pair in pairs:
            check_outcomes(pair)
    finally:
        for pair in pairs:
            pair.stop()
    return pairs


def check_outcomes(pair: Pair) -> None:
    """Every call this server placed is in the database, final, as the sandbox played it."""
    if pair.failures:
        return
    try:
        live = live_ids(pair)
        counts = statuses(pair)
        pair.routes = requests_by_route(pair)
    except (Failed, OSError) as exc:
        pair.failures.append(f"final check: {exc}")
        return
    if live:
        pair.failures.append(f"final check: GET /calls lists {len(live)} live calls")
    if counts != {EXPECTED_STATUS: pair.placed}:
        pair.failures.append(
            f"final check: calls by status {counts}, expected {pair.placed} {EXPECTED_STATUS}"
        )


def live_phase(
    variants: Sequence[Variant],
    sandbox_tree: Path,
    hello: Served,
    plan: Plan,
    root: Path,
    samples: Samples,
) -> list[Pair]:
    pairs: list[Pair] = []
    try:
        for i, v in enumerate(variants):
            note(f"many live: starting {v.label}")
            pairs.append(
                start_pair(
                    v,
                    v.sandbox or sandbox_tree,
                    root / f"live-{i}",
                    time_scale=1.0,
                    CALL_RINGING_TIMEOUT_S=str(LIVE_RINGING_TIMEOUT_S),
                )
            )
        for pair in pairs:
            note(f"many live: {pair.variant.label}: {plan.live_fill} ringing calls")
            try:
                fill(pair, plan)
            except Failed as exc:
                pair.failures.append(f"fill: {exc}")
        for r in range(plan.repeats):
            for pair in rotated(pairs, r):
                note(f"many live: repeat {r + 1}/{plan.repeats}, {pair.variant.label}")
                measure(
                    pair,
                    f"many live, repeat {r + 1}",
                    functools.partial(live_sample, pair, hello, plan),
                    samples,
                    "live",
                    r,
                )
    finally:
        for pair in pairs:
            pair.stop()
    return pairs


# ----------------------------------------------------------------------------- report


def _med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def spread(values: Sequence[float], spec: str = ".2f", scale: float = 1.0, sign: str = "") -> str:
    if not values:
        return "n/a"
    lo, mid, hi = (x * scale for x in (min(values), statistics.median(values), max(values)))
    return f"{mid:{sign}{spec}} ({lo:{sign}{spec}}..{hi:{sign}{spec}})"


def paired(runs: dict[int, Sample], ref: dict[int, Sample] | None) -> list[float]:
    """Per repeat, this variant's CPU per call over the reference's (same repeat only)."""
    if not ref:
        return []
    return [runs[r].cpu_ms / ref[r].cpu_ms for r in sorted(runs) if r in ref and ref[r].cpu_ms > 0]


def results_table(
    labels: Sequence[str], by_label: dict[str, dict[int, Sample]], first: str, *, live: bool
) -> str:
    rows = []
    for label in labels:
        runs = by_label.get(label, {})
        if not runs:
            rows.append([label, "failed", *(["n/a"] * (9 if live else 8))])
            continue
        ss = [runs[r] for r in sorted(runs)]
        vs_first = paired(runs, by_label.get(first))
        vs_current = paired(runs, by_label.get(CURRENT))
        row = [
            label,
            spread([s.cpu_ms for s in ss], ".3f"),
            spread([s.multiple for s in ss], ".1f"),
            spread(vs_first, ".3f") if label != first else "1",
            spread([x - 1 for x in vs_current], ".1f", 100.0, "+") + "%"
            if label != CURRENT and vs_current
            else ("0%" if label == CURRENT else "n/a"),
            spread([s.rate for s in ss], ".0f"),
            f"{_med([s.sandbox_cpu_ms for s in ss]):.3f}",
            f"{_med([s.p50 for s in ss]):.1f} / {_med([s.p99 for s in ss]):.1f}",
            f"{_med([s.hello_cpu_ms * 1000 for s in ss]):.0f}",
        ]
        if live:
            row.insert(1, f"{min(s.records for s in ss)}-{max(s.records for s in ss)}")
            row.append(f"{_med([s.config_bytes / 1024 for s in ss]):.0f}")
        else:
            row.append(f"{_med([float(s.polls) for s in ss]):.0f}")
        rows.append(row)
    headers = [
        "variant",
        "server CPU ms per call",
        "x hello CPU per request",
        f"vs {first}",
        "vs current",
        "placed calls/s" if live else "settled calls/s",
        "sandbox CPU ms per call",
        "p50 / p99 ms",
        "hello CPU µs per request",
    ]
    if live:
        headers.insert(1, "records before")
        headers.append("config.json KiB")
    else:
        headers.append("/metrics polls")
    return table(headers, rows)


def routes_table(pairs: Sequence[Pair]) -> str:
    """What each server was asked per call in the standard phase (the sandbox's webhooks, and
    whatever else it posts for a call), so that "CPU per call" compares like with like."""
    measured = [p for p in pairs if p.routes and p.placed]
    keys = sorted({k for p in measured for k in p.routes})
    rows = [
        [p.variant.label, *(f"{p.routes.get(k, 0.0) / p.placed:.2f}" for k in keys)]
        for p in measured
    ]
    return "\n".join(
        [
            "### Requests each server answered per placed call (standard phase, GETs left out)",
            "",
            table(["variant", *keys], rows) if rows else "(none)",
        ]
    )


def report(
    variants: Sequence[Variant],
    plan: Plan,
    samples: Samples,
    pairs: Sequence[Pair],
    command: str,
    took: float,
) -> str:
    labels = [v.label for v in variants]
    first = labels[0]
    out = [
        "## Server CPU per call, variants side by side (bench/compare.py)",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()}",
        f"- Command: `{command}`; took {took:.0f} s",
        f"- Repeats: {plan.repeats}, interleaved (each repeat measures every variant in turn, "
        "order rotated per repeat); cells are median (min..max) over repeats. `vs` columns are "
        "per-repeat paired ratios (CPU per call over the reference's in the same repeat); "
        "`vs current` as a change in %.",
        "- Variants:",
        *(f"  - `{v.label}`: {v.describe()}" for v in variants),
        "- Imports checked (launcher line of each server):",
        *sorted(
            {
                f"  - `{p.variant.label}`: {p.imported.removeprefix('bench-launcher: ')}"
                for p in pairs
            }
        ),
        "",
    ]
    for c in plan.clients:
        out += [
            f"### Placed and settled calls, {c} client{'s' if c > 1 else ''} "
            f"({plan.calls[c]} calls per measurement, {plan.hello[c]} hello requests)",
            "",
            "Sandbox in its own process at time scale 0; calls to "
            f"{SETTLED_NUMBER} (completed: 1 request in, 2 Twirp calls out, the webhooks in). "
            "Server CPU from /proc over the load and until every call settled, per call.",
            "",
            results_table(labels, samples.get(str(c), {}), first, live=False),
            "",
        ]
    out += [
        f"### Many live calls: {plan.live_fill} ringing calls, then {plan.live_extra} more per "
        f"measurement at {LIVE_CLIENTS} clients",
        "",
    ]
    if "live" in samples:
        out += [
            f"Sandbox at time scale 1, CALL_RINGING_TIMEOUT_S={LIVE_RINGING_TIMEOUT_S}, calls to "
            f"{RINGING_NUMBER} (they ring, live, with a config.json record each). Server CPU per "
            f"additional placed call, over the load and {LIVE_TRAIL_S} s after (their first "
            "webhooks); they are hung up afterwards, outside the measurement.",
            "",
            results_table(labels, samples["live"], first, live=True),
            "",
        ]
    else:
        out += ["(not measured)", ""]
    out += [routes_table(pairs), ""]
    failed = [p for p in pairs if p.failures]
    noisy = [(p, problems(p.server)) for p in pairs]
    out.append(f"Failures: {len(failed)}" + ("" if failed else " (every call 200 and settled)"))
    for pair in failed:
        out.append(f"- `{pair.variant.label}`: " + "; ".join(pair.failures))
    for pair, lines in noisy:
        if lines:
            out.append(f"- `{pair.variant.label}` server log ({pair.server.log_path.name}):")
            out += [f"      {ln}" for ln in lines]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", metavar="REV", help="a git revision to measure first")
    parser.add_argument(
        "--patch",
        action="append",
        default=[],
        metavar="NAME=FILE.py",
        help="the working tree with FILE.py run first (repeatable; NAME alone: bench/variants/)",
    )
    parser.add_argument("--all-patches", action="store_true", help="every bench/variants patch")
    parser.add_argument("--quick", action="store_true", help="about 2 minutes")
    parser.add_argument("--repeats", type=int, help="override the plan's repeats")
    parser.add_argument("--no-live", action="store_true", help="skip the many-live-calls table")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--base-sandbox",
        action="store_true",
        help="the base's own sandbox plays its calls (when what the agent sends changed)",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> int:
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        if not 1 <= args.repeats <= 20:
            raise ValueError("--repeats must be 1-20")
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    patches = [parse_patch(p) for p in [*args.patch, *(all_patches() if args.all_patches else [])]]
    labels = [CURRENT, *(name for name, _ in patches), *([args.base] if args.base else [])]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must differ: {labels}")
    started = time.monotonic()
    samples: Samples = {}
    pairs: list[Pair] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(tempfile.mkdtemp(prefix="bench-compare-"))
            note(f"work directory kept: {root}")
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-compare-")))
        variants: list[Variant] = []
        if args.base:
            tree, commit = stack.enter_context(worktree(args.base, root))
            what = f"git worktree of {commit[:12]}"
            if args.base_sandbox:
                what += ", its own sandbox"
            own = tree if args.base_sandbox else None
            variants.append(Variant(args.base, tree, what, sandbox=own))
        current = root / "current-tree"
        what = snapshot(current)
        note(f"current = {what}")
        variants.append(Variant(CURRENT, current, what))
        variants += [Variant(name, current, CURRENT, path) for name, path in patches]
        hello = start_hello(current, root)
        stack.callback(hello.stop)
        pairs += standard_phase(variants, current, hello, plan, root, samples)
        if not args.no_live:
            ok = [v for v, p in zip(variants, pairs, strict=True) if not p.failures]
            pairs += live_phase(ok, current, hello, plan, root, samples)
        text = report(variants, plan, samples, pairs, command, time.monotonic() - started)
    emit(text)
    return 1 if any(p.failures for p in pairs) else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        command = "python -m bench.compare " + " ".join(sys.argv[1:] if argv is None else argv)
        code = run(args, command.strip())
    except ValueError as exc:
        print(f"bench.compare: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("bench.compare: interrupted; every process stopped", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
