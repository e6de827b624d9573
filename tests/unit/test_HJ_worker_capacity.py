"""What README tells an operator about how many calls an agent worker takes is what the worker
`build_server` makes does: livekit-agents' own limits, which this project does not set.

README said nothing of it: not that each call runs in a process of its own, nor that a
worker is full at 70% CPU (its host's), nor that memory is not counted (a worker on a host
short of memory takes calls until the host runs out), nor that `dev` takes every call. An
upgrade of livekit-agents that changes one of these fails here, and README is read again."""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path

from livekit.agents import JobExecutorType
from livekit.agents import worker as livekit_worker
from livekit.agents.utils.hw import get_cpu_monitor

from agent.worker import build_server
from common.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def capacity_paragraph() -> str:
    """README's paragraph on a worker's calls, on one line."""
    text = " ".join(README.read_text().split())
    match = re.search(r"\*\*How many calls a worker takes\*\*(.*?)(?=`\.venv/bin/python -m)", text)
    assert match is not None, "README says nothing of how many calls a worker takes"
    return match.group(1)


def test_readme_says_how_many_calls_a_worker_takes_as_livekit_agents_decides() -> None:
    said = capacity_paragraph()
    server = build_server(Settings())

    # One process per call, forked from a template (the forkserver, on Linux).
    assert server._job_executor_type == JobExecutorType.PROCESS
    assert server._mp_ctx_str == "forkserver"
    assert "Each call runs in a process of its own, forked from a template" in said

    # Full at 70% of the host's CPU under `start`, averaged over 2.5 s; `dev`: never full.
    threshold = server._load_threshold
    assert isinstance(threshold, livekit_worker.ServerEnvOption)
    assert threshold.prod_default == 0.7 and "below 70%" in said
    assert math.isinf(threshold.dev_default) and "Under `dev` a worker takes every call" in said
    assert server.load_fnc in (None, livekit_worker._DefaultLoadCalc.get_load)
    # (its five samples of 0.5 s each, read from its source: an instance starts a thread)
    load_calc = inspect.getsource(livekit_worker._DefaultLoadCalc)
    assert "MovingAverage(5)" in load_calc and "interval=0.5" in load_calc
    assert "averaged over 2.5 s" in said

    # One warm process per CPU.
    idle = server._num_idle_processes
    assert isinstance(idle, livekit_worker.ServerEnvOption)
    cpus = math.ceil(get_cpu_monitor().cpu_count())
    assert idle.prod_default == cpus and "one process warm per CPU" in said

    # Memory is not counted: a warning past 1,000 MB a call, no limit.
    assert server._job_memory_warn_mb == 1000 and "past 1,000 MB" in said
    assert server._job_memory_limit_mb == 0 and "Memory is not counted" in said
