"""What the benchmarks share: statistics, markdown tables, goals, and the processes under test.

Everything binds 127.0.0.1 only, and every loop here is bounded in count or time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
HOST = "127.0.0.1"

# ----------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Spread:
    """min / median / max of one figure over the repeats of a run."""

    low: float
    mid: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan)
        return cls(min(values), statistics.median(values), max(values))

    def fmt(self, spec: str = ".2f") -> str:
        return f"{self.low:{spec}} / {self.mid:{spec}} / {self.high:{spec}}"


def num(value: float, spec: str = ".2f") -> str:
    return "n/a" if math.isnan(value) else f"{value:{spec}}"


# ----------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table with padded columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = (c.ljust(w) for c, w in zip(cells, widths, strict=True))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


@dataclass(frozen=True)
class Goal:
    """One goal we hold ourselves to, checked against the median over repeats."""

    what: str
    value: float
    limit: float
    op: Literal["<=", ">="]
    unit: str = ""
    spread: Spread | None = None

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def line(self) -> str:
        value = f"{self.value:.3g}{self.unit}"
        rng = f" (repeats {self.spread.fmt('.3g')})" if self.spread else ""
        target = f"{self.op} {self.limit:.3g}{self.unit}"
        if self.met:
            return f"- met: {self.what} = {value}{rng}, goal {target}"
        if self.op == "<=":
            by = self.value / self.limit if self.limit else math.inf
            how = f"{by:.2f}x the limit"
        else:
            by = self.limit / self.value if self.value else math.inf
            how = f"{by:.2f}x short"
        return f"- **MISSED**: {self.what} = {value}{rng}, goal {target} ({how})"


def section(title: str, body: Sequence[str]) -> str:
    return "\n".join([f"### {title}", "", *body, ""])


def emit(text: str) -> None:
    print(text, flush=True)


def note(text: str) -> None:
    """Progress for the person waiting, on stderr so tables stay clean on stdout."""
    print(f"  [{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def quick_main(
    name: str, doc: str | None, run: Callable[[bool], int], argv: Sequence[str] | None
) -> None:
    """`python -m bench.NAME [--quick]`: `run(quick)`'s exit code; 130 on Ctrl-C, once `run`
    has stopped every process it started."""
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    args = parser.parse_args(argv)
    try:
        code = run(args.quick)
    except KeyboardInterrupt:
        print(f"bench.{name}: interrupted; every process stopped", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14, stime field 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("PYTHONDEVMODE", None)
    if extra:
        env.update(extra)
    return env


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, body: Mapping[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 (loopback)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


class Served:
    """An HTTP server under test, run as a real subprocess on 127.0.0.1."""

    def __init__(self, name: str, argv: list[str], port: int, env: dict[str, str], cwd: Path):
        self.name = name
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log_path = cwd / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str = "/healthz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(OSError):
                status, _ = http_get(self.url + path, timeout=1.0)
                if status == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)

    def log_problems(self) -> list[str]:
        """Tracebacks and ERROR lines in the server's log (there should be none)."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [ln for ln in lines if " ERROR " in ln or ln.startswith("Traceback")][:5]


def start_server(
    workdir: Path,
    *,
    time_scale: float = 0.0,
    port: int | None = None,
    livekit: Served | None = None,
    **env: str,
) -> Served:
    """`server.py` main with its own temp files and the sandbox in its process, or, with
    `livekit` (from `start_livekit`), configured for that as a real LiveKit."""
    port, sandbox_port = port or free_port(), free_port()
    settings = {
        "HOST": HOST,
        "PORT": str(port),
        "CONFIG_PATH": str(workdir / "config.json"),
        "CALLS_DB_PATH": str(workdir / "calls.db"),
        "SANDBOX_TIME_SCALE": str(time_scale),
        "SANDBOX_PORT": str(sandbox_port),
        "CALLS_RATE_LIMIT_PER_MIN": "1000000",
        "CALLS_MAX_ACTIVE": "1000000",
        "LIVEKIT_URL": "",
        "CALLS_API_TOKEN": "",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "text",
        "METRICS_REUSE_S": "0",  # settling is watched on /metrics: its counts as they are
    }
    if livekit is not None:
        settings |= {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": LIVEKIT_KEY,
            "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
            "SIP_OUTBOUND_TRUNK_ID": "ST_bench",
        }
    settings.update(env)
    # cwd is the temp dir, so a developer's .env in the repository cannot change the run.
    served = Served(
        "server", [PYTHON, str(ROOT / "server.py")], port, subprocess_env(settings), workdir
    )
    served.wait_ready()
    return served


# The API key and secret of a bench's "real" LiveKit: the sandbox in its own process.
LIVEKIT_KEY, LIVEKIT_SECRET = "APIbench", "bench-secret-" + "x" * 32


def start_livekit(workdir: Path, server_port: int) -> Served:
    """The sandbox in its own process as a real LiveKit, posting its webhooks to the server
    that will listen on `server_port` (started with `livekit=` this)."""
    workdir.mkdir(parents=True, exist_ok=True)
    webhook_url = f"http://{HOST}:{server_port}/webhooks/livekit"
    return start_sandbox(workdir, webhook_url, LIVEKIT_KEY, LIVEKIT_SECRET)


def start_split(workdir: Path, **env: Any) -> tuple[Served, Served]:
    """A server and its LiveKit, the sandbox, each in its own process (in `workdir`); `env`:
    more of `start_server`'s settings."""
    port = free_port()
    sandbox = start_livekit(workdir, port)
    try:
        return sandbox, start_server(workdir, port=port, livekit=sandbox, **env)
    except BaseException:
        sandbox.stop()
        raise


def start_sandbox(workdir: Path, webhook_url: str, api_key: str, api_secret: str) -> Served:
    """`python -m sandbox` in its own process (time scale 0), as a real LiveKit would be."""
    port = free_port()
    argv = [
        PYTHON,
        "-m",
        "sandbox",
        "--port",
        str(port),
        "--webhook-url",
        webhook_url,
        "--time-scale",
        "0",
    ]
    env = subprocess_env({"LIVEKIT_API_KEY": api_key, "LIVEKIT_API_SECRET": api_secret})
    served = Served("sandbox", argv, port, env, workdir)
    served.wait_ready("/")
    return served


def start_hello(workdir: Path) -> Served:
    """The baseline: a bare aiohttp hello-world handler, served the way server.py serves."""
    port = free_port()
    served = Served(
        "hello",
        [PYTHON, "-m", "bench.hello", str(port)],
        port,
        subprocess_env(),
        workdir,
    )
    served.wait_ready()
    return served


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        yield Path(tmp)


# ----------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class LoadResult:
    ok: int
    errors: int
    error_samples: list[str]
    latencies_ms: list[float]
    t_start: float  # wall clock, to line up with the server's settling
    t_end: float
    elapsed_s: float

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else math.nan

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def run_load(spec: Mapping[str, Any]) -> LoadResult:
    """Run `bench.loadgen` in its own process with `spec`; bounded by its count and max_s."""
    limit = float(spec["max_s"]) + 60.0
    done = subprocess.run(
        [PYTHON, "-m", "bench.loadgen"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=limit,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stderr[-2000:]}")
    doc = json.loads(done.stdout)
    return LoadResult(
        ok=int(doc["ok"]),
        errors=int(doc["errors"]),
        error_samples=[str(s) for s in doc["error_samples"]],
        latencies_ms=[float(x) for x in doc["latencies_ms"]],
        t_start=float(doc["t_start"]),
        t_end=float(doc["t_end"]),
        elapsed_s=float(doc["elapsed_s"]),
    )


LIVE_STATUSES = ("dialing", "ringing", "in_progress")


def live_calls(server: Served) -> int:
    """Live calls according to the server's /metrics (the calls gauge by status)."""
    _, body = http_get(server.url + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("calls{"):
            labels, _, value = line.rpartition(" ")
            if any(f'status="{s}"' in labels for s in LIVE_STATUSES):
                total += float(value)
    return int(total)


def wait_settled(server: Served, timeout: float = 120.0, poll_s: float = 0.02) -> float:
    """Wait until no call is live (all webhooks of all calls applied); return the wall time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_calls(server) == 0:
            return time.time()
        time.sleep(poll_s)
    raise RuntimeError(f"calls still live after {timeout:.0f} s")


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return f"{cores} cores (nproc), Python {sys.version.split()[0]}, {sys.platform}"
