"""A plain stop after a DNC list and a campaign were sent: no ERROR about stuck threads."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.processes import ServerProcess


async def test_a_stop_after_a_dnc_list_and_a_campaign_says_nothing_of_stuck_threads(
    tmp_path: Path, processes: list[Any]
) -> None:
    """The threads that parse DNC lists and campaigns (pools of their own, made when first
    used) waited for work for good once idle: a plain SIGINT after `POST /dnc` and `POST
    /campaigns` took 2 s more and logged an ERROR, "exiting without 2 thread(s) still held
    in a file operation (a stalled disk?): campaign-parse_0, dnc-parse_0"."""
    server = ServerProcess(tmp_path, "idle-threads", {})
    processes.append(server)
    campaign = {
        "name": "Idle threads",
        "recipients": [{"phone_number": "+14155550123"}],
        "start_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86400)),
    }
    async with aiohttp.ClientSession() as session:
        await server.wait_ready(session)
        async with session.post(f"{server.url}/dnc", json={"numbers": ["+14155550100"]}) as r:
            assert r.status == 200, await r.text()
        async with session.post(f"{server.url}/campaigns", json=campaign) as r:
            assert r.status == 201, await r.text()
    started = time.monotonic()
    server.proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(server.proc.wait, 30) == 0
    logs = server.logs()
    assert "server: stopped" in logs
    assert "exiting without" not in logs and "ERROR" not in logs, logs
    assert time.monotonic() - started < 10
