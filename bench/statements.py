"""SQL statements and transactions per placed and settled call, by store program (SQLite).

    python -m bench.statements [--calls N] [--clients C]

The server and its LiveKit (the sandbox) each in its own process, as in `bench.compare`, the
server with bench/variants/_trace_sql.py executed first: sqlite3's trace callback counts every
statement of its connections under the transaction program running it. After 20 calls to
warm up, N calls (60) to +14155557705 (answered, then the callee hangs up: completed) at C
clients (1); the counts taken before and after, once every call settled and 1 s more (the
outbox's marks). Per call: the statements by kind, the framing of the transactions (BEGIN,
SAVEPOINT, RELEASE, ROLLBACK, COMMIT: programs queued together share one COMMIT), each
program's statements, and the write transactions by the programs they ran. The programs'
counts are the call's own (the periodic ones, the campaign claims and /metrics' counts,
show as fractions); the framing and the transactions depend on how the exchanges overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.compare import (
    SETTLE_TIMEOUT_S,
    SETTLED_NUMBER,
    Pair,
    Variant,
    place,
    start_pair,
    wait_live,
)
from bench.harness import ROOT, emit, note, section, table, workdir

TRACER = ROOT / "bench" / "variants" / "_trace_sql.py"
WARMUP = 20
TRAIL_S = 1.0
FRAMING = "-"  # the program name of the transactions' own statements


def counts(pair: Pair, out: Path) -> dict[str, Any]:
    """The tracer's counts so far (it writes them on SIGUSR1)."""
    out.unlink(missing_ok=True)
    os.kill(pair.server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not out.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server wrote no counts; see {pair.server.log_path}")
        time.sleep(0.02)
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def per_call(after: dict[str, Any], before: dict[str, Any], key: str) -> Counter[Any]:
    def read(doc: dict[str, Any]) -> Counter[Any]:
        if key == "statements":
            return Counter({tuple(row[:3]): row[3] for row in doc[key]})
        return Counter(doc[key])

    return read(after) - read(before)


def report(statements: Counter[Any], transactions: Counter[Any], calls: int) -> str:
    def n(value: float) -> str:
        return f"{value / calls:.2f}"

    def listing(sqls: Counter[str]) -> str:
        return "<br>".join(f"{n(c)} {sql[:110]}" for sql, c in sqls.most_common())

    total = sum(statements.values())
    framing = sum(c for (_, program, _), c in statements.items() if program == FRAMING)
    kinds: Counter[str] = Counter()
    programs: dict[str, Counter[str]] = {}
    for (thread, program, sql), c in statements.items():
        kinds[sql.split(" ", 1)[0].upper()] += c
        if program != FRAMING:
            programs.setdefault(f"{program} ({thread})", Counter())[sql] += c
    ranked = sorted(programs.items(), key=lambda item: -sum(item[1].values()))
    lines = [
        f"{calls} placed and settled calls (SQLite): **{n(total)} statements a call**, of which"
        f" {n(total - framing)} in the programs and {n(framing)} the transactions' framing;"
        f" {n(transactions.total())} write transactions (COMMITs) a call.",
        "",
        table(["kind", "a call"], [[k, n(c)] for k, c in kinds.most_common()]),
        "",
        table(
            ["program (thread)", "a call", "its statements, a call each"],
            [[name, n(sum(sqls.values())), listing(sqls)] for name, sqls in ranked],
        ),
        "",
        table(
            ["write transaction: its programs", "a call"],
            [[programs_run or "(none)", n(c)] for programs_run, c in transactions.most_common()],
        ),
    ]
    return section("SQL statements per placed and settled call (bench/statements.py)", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    with workdir("statements") as root:
        out = root / "counts.json"
        variant = Variant("traced", ROOT, "the working tree, traced", TRACER)
        pair = start_pair(variant, ROOT, root / "server", time_scale=0, BENCH_TRACE_OUT=str(out))
        try:
            note(f"statements: {WARMUP} calls to warm up")
            place(pair, 1, WARMUP, SETTLED_NUMBER)
            wait_live(pair, 0, SETTLE_TIMEOUT_S)
            time.sleep(TRAIL_S)
            before = counts(pair, out)
            note(f"statements: {args.calls} calls at {args.clients} client(s)")
            place(pair, args.clients, args.calls, SETTLED_NUMBER)
            wait_live(pair, 0, SETTLE_TIMEOUT_S)
            time.sleep(TRAIL_S)
            after = counts(pair, out)
        finally:
            pair.stop()
    statements = per_call(after, before, "statements")
    transactions = per_call(after, before, "transactions")
    emit(report(statements, transactions, args.calls))


if __name__ == "__main__":
    main()
