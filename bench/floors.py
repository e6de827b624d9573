"""Issue 17's goals next to their floors: what a call costs a server that does nothing else.

    python -m bench.floors            # about 4 minutes here
    python -m bench.floors --quick    # about 2

The goals (bench.http's second table) are multiples of a hello-world request. This measures,
side by side in one run and with bench.compare's machinery (sandbox in its own process, the
same calls, hello-world measured before each measurement at the same concurrency), the real
server and three bare servers (bench/variants/exchanges_floor*.py) that answer the same
requests the same way on the wire and do nothing else:

- `exchanges_floor`: the call's exchanges alone (the intake with its two Twirp calls through
  the real LiveKit client, 6 webhooks, the agent's report POSTs);
- `exchanges_floor_verified`: and each webhook's and report's signature check;
- `exchanges_floor_durable`: and the fewest fsyncs before answering, group-committed (the
  call's config written as config.json is, one record before its dial, one per webhook and
  report POST). This is the floor under the issue's own rules (verification complete, fsync
  before answering): no server keeping them does the same calls for less.

Where that floor misses a goal, the goal is out of reach on this machine whatever the server
does; the distance from the server to the floor is what the server's own work costs.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import compare
from bench.compare import CURRENT, FULL, QUICK, VARIANTS_DIR, Sample, Variant
from bench.harness import emit, machine, note, quick_main, table

FLOORS = ("exchanges_floor", "exchanges_floor_verified", "exchanges_floor_durable")
# The goals' setting (bench.http): the server and hello-world at LOG_LEVEL=INFO, hello-world
# writing aiohttp's access log line per request as `web.run_app` does (bench.compare runs
# everything at WARNING). The bare servers log nothing: they are the least a server does.
GOALS_LOG_LEVEL = "INFO"
DURABLE = FLOORS[-1]
TITLES = {
    CURRENT: "the server",
    "exchanges_floor": "exchanges alone",
    "exchanges_floor_verified": "+ signature checks",
    "exchanges_floor_durable": "+ fsyncs (the floor)",
}


def _median(samples: dict[int, Sample], figure: Callable[[Sample], float]) -> float:
    values = [figure(s) for s in samples.values()]
    return statistics.median(values) if values else float("nan")


def _goal_rows(samples: compare.Samples, labels: Sequence[str]) -> list[list[str]]:
    def cells(
        key: str, figure: Callable[[Sample], float], fmt: Callable[[float], str]
    ) -> list[str]:
        return [fmt(_median(samples.get(key, {}).get(label, {}), figure)) for label in labels]

    def verdict(key: str, figure: Callable[[Sample], float], ok: Callable[[float], bool]) -> str:
        floor = _median(samples.get(key, {}).get(DURABLE, {}), figure)
        return "the floor meets it" if ok(floor) else "**out of reach: the floor misses it**"

    def times(x: float) -> str:
        return f"{x:.1f}x"

    def cpu(s: Sample) -> float:
        return s.multiple

    def rate(s: Sample) -> float:
        return s.rate / s.hello_rps

    def p99(s: Sample) -> float:
        return s.p99

    return [
        [
            "server CPU per settled call <= 30 hello-world requests, 1 client",
            *cells("1", cpu, times),
            verdict("1", cpu, lambda x: x <= 30),
        ],
        [
            "the same, 50 clients",
            *cells("50", cpu, times),
            verdict("50", cpu, lambda x: x <= 30),
        ],
        [
            "settled calls/s at 50 clients >= 1/30 of hello-world req/s",
            *cells("50", rate, lambda x: f"1/{1 / x:.0f}"),
            verdict("50", rate, lambda x: x >= 1 / 30),
        ],
        [
            "`POST /calls/outbound` p99 <= 10 ms, 1 client",
            *cells("1", p99, lambda x: f"{x:.1f} ms"),
            verdict("1", p99, lambda x: x <= 10),
        ],
    ]


def report(
    samples: compare.Samples, pairs: Sequence[compare.Pair], took: float, plan: compare.Plan
) -> str:
    labels = [CURRENT, *FLOORS]
    out = [
        "## Issue 17's goals next to their floors (bench/floors.py)",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {machine()}; took {took:.0f} s",
        f"- {plan.repeats} repeats, interleaved as in bench.compare (order rotated per repeat);"
        " cells are medians over the repeats. The floors are bare servers that answer the"
        " same requests the same way on the wire and do nothing else (see the module's"
        " docstring); the last one keeps the issue's rules: complete signature checks, fsync"
        " before answering. As in the goals' setting (bench.http), the server and hello-world"
        " run at LOG_LEVEL=INFO (hello-world writing its access log); the bare servers log"
        " nothing.",
        "",
        table(
            ["goal", *(TITLES[label] for label in labels), "verdict"], _goal_rows(samples, labels)
        ),
        "",
    ]
    for c in plan.clients:
        out += [
            f"### Side by side, {c} client{'s' if c > 1 else ''} ({plan.calls[c]} calls per"
            f" measurement, {plan.hello[c]} hello requests)",
            "",
            compare.results_table(labels, samples.get(str(c), {}), CURRENT, live=False),
            "",
        ]
    failed = [p for p in pairs if p.failures]
    out.append(f"Failures: {len(failed)}" + ("" if failed else " (every call 200 and settled)"))
    out += [f"- `{p.variant.label}`: " + "; ".join(p.failures) for p in failed]
    return "\n".join(out) + "\n"


def run(quick: bool) -> int:
    plan = QUICK if quick else FULL
    compare.LOG_LEVEL = GOALS_LOG_LEVEL  # read by compare's launchers as they start each one
    started = time.monotonic()
    samples: compare.Samples = {}
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-floors-")))
        current = root / "current-tree"
        what = compare.snapshot(current)
        note(f"current = {what}")
        variants = [Variant(CURRENT, current, what)]
        variants += [Variant(n, current, CURRENT, VARIANTS_DIR / f"{n}.py") for n in FLOORS]
        hello = compare.start_hello(current, root)
        stack.callback(hello.stop)
        pairs = compare.standard_phase(variants, current, hello, plan, root, samples)
    emit(report(samples, pairs, time.monotonic() - started, plan))
    return 1 if any(p.failures for p in pairs) else 0


def main(argv: Sequence[str] | None = None) -> None:
    quick_main("floors", __doc__, run, argv)


if __name__ == "__main__":
    main()
