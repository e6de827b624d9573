"""SIGTERM to a real server whose PostgreSQL does not answer (its processes SIGSTOPped, as a
frozen host or a network cut leaves it): the stop took 36-46 s, its steps (the campaign
scheduler's cancelled work rolling back, claims given back, the sandbox's calls settled) each
waiting 10-15 s for the database, past Kubernetes' default 30 s grace, whose SIGKILL leaves
the stop unsaid. Its database waits now have one budget (server.STOP_DATABASE_WAIT_S) in all;
on a database that answers, the stop still does all it did."""

from __future__ import annotations

import asyncio
import base64
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import asyncpg

from tests.pg_cluster import PostgresCluster
from tests.processes import ServerProcess, free_port

TOKEN = "stop-frozen-token-0123456789"
# Well within Kubernetes' default terminationGracePeriodSeconds (30 s).
STOP_BOUND_S = 15.0  # server.STOP_DATABASE_WAIT_S (5 s), and the steps' own work


def _server(tmp_path: Path, dsn: str) -> ServerProcess:
    return ServerProcess(
        tmp_path,
        "server",
        {
            "DATABASE_URL": dsn,
            "CONFIG_PATH": str(tmp_path / "config.json"),
            "CALLS_API_TOKEN": TOKEN,
            "SANDBOX_TIME_SCALE": "1",  # calls last 13 to 33 s: live at the stop
            "REAPER_INTERVAL_S": "0.2",
            # The webhook sender too: its claims are given back as it stops.
            "CALLS_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"s" * 32).decode(),
            "CALLS_WEBHOOK_URL": f"http://127.0.0.1:{free_port()}/hook",
            "CALLS_WEBHOOK_ALLOW_PRIVATE": "1",
        },
    )


async def _stop(proc: ServerProcess) -> float:
    """SIGTERM; how long the process took to exit."""
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(proc.proc.wait, 60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running 60 s after SIGTERM:\n{proc.logs()}") from None
    return time.monotonic() - started


async def test_a_stop_on_a_frozen_postgresql_ends_within_its_budget(
    tmp_path: Path, postgres_dsn: str, postgres_cluster: PostgresCluster
) -> None:
    proc = _server(tmp_path, postgres_dsn)
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
        with postgres_cluster.frozen():
            await asyncio.sleep(1.0)  # the reaper's and the scheduler's work hang on it by now
            took = await _stop(proc)
        logs = proc.logs()
        assert took < STOP_BOUND_S, f"the stop took {took:.1f} s:\n{logs}"
        assert proc.proc.returncode == 0, logs
        assert "no answer within 5 s of the stop" in logs, logs
        assert "Traceback" not in logs, logs
        assert logs.rstrip().endswith("server: stopped"), logs
    finally:
        proc.stop()


async def test_a_stop_on_a_healthy_postgresql_still_settles_and_says_nothing_of_it(
    tmp_path: Path, postgres_dsn: str
) -> None:
    proc = _server(tmp_path, postgres_dsn)
    try:
        async with aiohttp.ClientSession() as session:
            await proc.wait_ready(session)
            async with session.post(
                f"{proc.url}/calls/outbound",
                json={"phone_number": "+14155550123", "name": "Stop Test"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as resp:
                assert resp.status == 200, await resp.text()
                call_id = (await resp.json())["call_id"]
        took = await _stop(proc)
        logs = proc.logs()
        assert took < STOP_BOUND_S, f"the stop took {took:.1f} s:\n{logs}"
        assert "of the stop" not in logs, logs
        assert "stopping with 1 call(s) live in the embedded sandbox" in logs, logs
    finally:
        proc.stop()
    conn = await asyncpg.connect(postgres_dsn)
    try:
        status = await conn.fetchval("SELECT status FROM calls WHERE call_id = $1", call_id)
    finally:
        await conn.close()
    assert status == "failed", logs  # still dialling: the room it rang in went with the sandbox
