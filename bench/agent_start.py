"""Agent job start: from the job's start to a built session plan and its plugin objects.

What `agent.worker.entrypoint` does before it connects to the room: parse the dispatch
metadata, load the call's record from config.json (a fresh `ConfigStore`, as in a new job
process: no cache), check it predates the room (`select_config`), plan the session, and build
the Deepgram STT, OpenAI LLM and Cartesia TTS objects and the agent. config.json holds 10, then
500 live calls; the 10-call case is the baseline of the ratio.

The jobs of a process share one OpenAI client (`agent.session.openai_client`); two more rows
measure a new client per job, as before that (`openai.LLM` then builds a new httpx client, and
with it a TLS context that loads the CA bundle, on every job).

    python -m bench.agent_start [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livekit.plugins import cartesia, deepgram  # noqa: F401  (loaded at worker start)
from livekit.plugins import openai as lk_openai

from agent.config_source import (
    load_call_record,
    resolve_call_id,
    room_creation_time,
    select_config,
)
from agent.plan import SessionPlan, plan_session
from agent.session import build_agent, build_stt, build_tts
from bench.harness import Goal, Spread, emit, note, percentile, section, table, workdir
from common.contracts import DispatchMetadata
from common.livekit.client import dispatch_metadata
from common.settings import Settings
from common.update_config import ConfigStore

INSTRUCTIONS = (
    "You are a friendly assistant calling on behalf of Acme Dental to confirm tomorrow's "
    "appointment. Greet the patient by name, confirm the date and time, offer to reschedule "
    "if it does not suit them, and answer short questions about the clinic's address and "
    "parking. Never discuss prices or medical advice; offer a call back from the front desk "
    "instead. Keep every answer short and polite, and end the call once everything is clear."
)
SETTINGS = Settings(
    openai_api_key="sk-bench", deepgram_api_key="dg-bench", cartesia_api_key="ca-bench"
)
PHONE = "+34612345678"
BASE, MANY = "10 live calls", "500 live calls"
BASE_OWN = "10 live calls, a new OpenAI client per job (before)"
MANY_OWN = "500 live calls, a new OpenAI client per job (before)"


@dataclass(frozen=True)
class Plan:
    repeats: int
    jobs: int  # job starts per case per repeat


FULL = Plan(repeats=5, jobs=60)
QUICK = Plan(repeats=3, jobs=25)


class NoControl:
    """The agent's call control; nothing is called while building."""

    async def set_outcome(self, outcome: str) -> None:
        return None

    async def hang_up(self) -> None:
        return None

    def do_not_call(self) -> None:
        return None


@dataclass(frozen=True)
class Job:
    metadata: str
    room_name: str
    creation_time_ms: int


async def fill(path: Path, live: int) -> list[Job]:
    """config.json with `live` calls, and the job each call's dispatch would start."""
    store = ConfigStore(path)
    jobs = []
    for first in range(0, live, 100):
        ids = [f"call-{i:012x}" for i in range(first, min(first + 100, live))]
        records = await asyncio.gather(
            *(
                store.update_async(
                    "Alice Example",
                    INSTRUCTIONS,
                    "es",
                    "Friendly",
                    {"customer_tier": "Premium", "campaign_id": "SUMMER2024"},
                    call_id=c,
                )
                for c in ids
            )
        )
        for call_id, record in zip(ids, records, strict=True):
            jobs.append(Job(dispatch_metadata(call_id, PHONE, record), call_id, 0))
    created_ms = int(time.time() * 1000) + 1  # the rooms were created after the writes
    return [dataclasses.replace(j, creation_time_ms=created_ms) for j in jobs]


LlmBuilder = Callable[[SessionPlan, Settings], Any]


def default_llm(plan: SessionPlan, settings: Settings) -> Any:
    from agent.session import build_llm

    return build_llm(plan, settings)


async def start_job(path: Path, job: Job, build_llm: LlmBuilder) -> tuple[float, float]:
    """One job start; returns (seconds to the plan, seconds to the plugin objects)."""
    started = time.perf_counter()
    metadata = DispatchMetadata.parse(job.metadata)
    call_id = resolve_call_id(metadata, job.room_name)
    record = await load_call_record(ConfigStore(path), call_id)
    created = room_creation_time(0, job.creation_time_ms)
    selected = select_config(
        call_id, record, metadata.config, created.at, granularity_s=created.granularity_s
    )
    if selected.source != "config.json":
        raise RuntimeError(f"{call_id}: expected the config.json record, got {selected}")
    plan = plan_session(selected.config, SETTINGS, call_id=call_id, source=selected.source)
    planned = time.perf_counter()
    build_stt(plan, SETTINGS)
    build_llm(plan, SETTINGS)
    build_tts(plan, SETTINGS)
    build_agent(plan, NoControl())
    return planned - started, time.perf_counter() - started


async def measure(run: Plan) -> str:
    def own_llm(plan: SessionPlan, settings: Settings) -> Any:
        return lk_openai.LLM(model=plan.llm.model, api_key=settings.openai_api_key)

    with workdir("agent") as root:
        (root / "10").mkdir()
        (root / "500").mkdir()
        jobs = {
            "10": await fill(root / "10" / "config.json", 10),
            "500": await fill(root / "500" / "config.json", 500),
        }
        cases: list[tuple[str, str, LlmBuilder]] = [
            (BASE, "10", default_llm),
            (MANY, "500", default_llm),
            (BASE_OWN, "10", own_llm),
            (MANY_OWN, "500", own_llm),
        ]
        total: dict[str, list[float]] = {c[0]: [] for c in cases}
        planned: dict[str, list[float]] = {c[0]: [] for c in cases}
        medians: dict[str, list[float]] = {c[0]: [] for c in cases}
        await start_job(root / "10" / "config.json", jobs["10"][0], default_llm)  # warm
        for r in range(run.repeats):
            note(f"agent_start: repeat {r + 1}/{run.repeats}")
            for label, key, llm in cases:
                path = root / key / "config.json"
                these = []
                for i in range(run.jobs):
                    job = jobs[key][(i * 7) % len(jobs[key])]
                    to_plan, to_objects = await start_job(path, job, llm)
                    planned[label].append(to_plan * 1000)
                    these.append(to_objects * 1000)
                total[label].extend(these)
                medians[label].append(statistics.median(these))
        sizes = {k: (root / k / "config.json").stat().st_size for k in ("10", "500")}

    rows = []
    for label, key, _ in cases:
        base = BASE_OWN if "before" in label else BASE
        vs_base = Spread.of([m / b for m, b in zip(medians[label], medians[base], strict=True)])
        rows.append(
            [
                label,
                f"{sizes[key]:,}",
                f"{statistics.median(planned[label]):.2f} / {percentile(planned[label], 99):.2f}",
                Spread.of(medians[label]).fmt(".2f"),
                f"{percentile(total[label], 99):.2f}",
                vs_base.fmt(),
            ]
        )

    def ratio(a: str, b: str) -> Spread:
        return Spread.of([m / n for m, n in zip(medians[a], medians[b], strict=True)])

    p99s = {label: percentile(total[label], 99) for label in total}
    r_now = ratio(MANY, BASE)
    goals = [
        Goal("job start p99, 10 live calls", p99s[BASE], 5.0, "<=", " ms"),
        Goal("job start p99, 500 live calls", p99s[MANY], 5.0, "<=", " ms"),
        Goal("500 / 10 live calls (median job start)", r_now.mid, 1.5, "<=", "x", r_now),
    ]
    text = table(
        [
            "config.json holds",
            "bytes",
            "to plan ms (p50 / p99)",
            "to plugin objects ms, median (min / med / max)",
            "p99 ms (all jobs)",
            "vs 10 live calls (same client)",
        ],
        rows,
    )
    return section(
        "Agent job start (bench/agent_start.py)",
        [
            "Job start -> dispatch metadata parsed, call's record loaded from config.json by a "
            "fresh ConfigStore (a new job process has no cache) and checked against the room's "
            "creation time, session planned, then STT / LLM / TTS plugin objects and the agent "
            f"built. {run.jobs} job starts per case per repeat, {run.repeats} repeats.",
            "",
            text,
            "",
            *(g.line() for g in goals),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    emit(asyncio.run(measure(QUICK if args.quick else FULL)))


if __name__ == "__main__":
    main()
