"""Run every benchmark in sequence, each in its own process, and print all tables.

    python -m bench                 # everything (`make bench`), a few minutes
    python -m bench --quick         # fewer repeats and requests, about a minute and a half
    python -m bench --only http,memory
    python -m bench --results bench/RESULTS.md   # also record the tables there

`--results` replaces the part of the file between the `bench:begin` / `bench:end` markers
(creating the file if needed) and keeps everything else, e.g. the written analysis.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import PYTHON, ROOT, machine, subprocess_env

BENCHMARKS = (
    "config_write",
    "http",
    "floors",
    "gc_cost",
    "agent_start",
    "memory",
    "webhooks",
    "postgres",
    "campaigns",
    "counts",
)
BEGIN = "<!-- bench:begin: written by `python -m bench --results`; edit outside the markers -->"
END = "<!-- bench:end -->"
TIMEOUT_S = 600


def run_one(name: str, quick: bool, extra: list[str]) -> tuple[str, float]:
    argv = [PYTHON, "-m", f"bench.{name}", *(["--quick"] if quick else []), *extra]
    print(f"== bench.{name}", file=sys.stderr, flush=True)
    started = time.monotonic()
    done = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=False,
    )
    took = time.monotonic() - started
    if done.returncode != 0:
        return f"### bench.{name} FAILED (exit {done.returncode})\n\n{done.stdout}", took
    return done.stdout.rstrip() + "\n", took


def record(path: Path, header: str, body: str) -> None:
    block = f"{BEGIN}\n\n{header}\n\n{body}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    parser.add_argument("--results", type=Path, help="record the tables in this markdown file")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    started = time.monotonic()
    outputs, timings = [], []
    # The memory benchmark continues on the server of the http one (saves ~5,000 calls).
    merged = "http" in names and "memory" in names
    for name in names:
        if merged and name == "memory":
            continue
        text, took = run_one(name, args.quick, ["--memory"] if merged and name == "http" else [])
        print(text, flush=True)
        outputs.append(text)
        timings.append(f"{name} {took:.0f} s")
    total = time.monotonic() - started
    command = "python -m bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "make bench"
    header = "\n".join(
        [
            f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
            f"- Machine: {machine()}",
            f"- Command: `{command.strip()}`{' (quick mode)' if args.quick else ''}",
            f"- Took: {total:.0f} s ({', '.join(timings)})",
        ]
    )
    print(header)
    if args.results:
        record(args.results, header, "\n".join(outputs))
        print(f"recorded in {args.results}", file=sys.stderr)
    if any("FAILED" in o.splitlines()[0] for o in outputs if o):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
