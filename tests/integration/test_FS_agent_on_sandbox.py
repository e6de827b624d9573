"""`python -m agent start` pointed at the sandbox (`python -m sandbox`, or a server's
embedded one): the sandbox hosts no agent worker (it plays the agent's part itself), and the
worker retried aiohttp's bare 404 on /agent for ~2 minutes, 16 WARNINGs naming only the
status, with nothing on either side saying why. Now the sandbox says so on /agent (a
WARNING, and a header), and the worker's start stops at once, exit 2, saying what to set."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from agent.cli import sandbox_problem
from sandbox.server import Sandbox
from tests.processes import SandboxProcess, free_port, run_to_end

REPO = Path(__file__).resolve().parents[2]
KEY, SECRET = "APIfsagent", "fs-agent-secret-of-livekits-length-xxxxxx"


async def test_the_sandbox_says_it_hosts_no_worker(caplog: pytest.LogCaptureFixture) -> None:
    sandbox = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url=None)
    await sandbox.start()
    try:
        with caplog.at_level(logging.WARNING, logger="sandbox.server"):
            url = sandbox.url.replace("http://", "ws://")
            problem = await asyncio.to_thread(sandbox_problem, url)
        assert problem is not None and "sandbox" in problem and "LIVEKIT_URL" in problem
        assert any("hosts no agent worker" in r.getMessage() for r in caplog.records)
    finally:
        await sandbox.stop()


async def test_another_answer_or_none_is_left_to_the_worker() -> None:
    """A LiveKit's 404 (or 401) without the sandbox's header, or nothing listening: no
    verdict, the worker retries as before (LiveKit may be starting)."""
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert await asyncio.to_thread(sandbox_problem, f"ws://127.0.0.1:{port}") is None
    finally:
        await runner.cleanup()
    assert await asyncio.to_thread(sandbox_problem, f"ws://127.0.0.1:{free_port()}") is None


async def test_agent_start_on_the_standalone_sandbox_stops_at_once(tmp_path: Path) -> None:
    sandbox = SandboxProcess(
        tmp_path, "http://127.0.0.1:9/webhooks/livekit", api_key=KEY, api_secret=SECRET
    )
    try:
        async with aiohttp.ClientSession() as session:
            await sandbox.wait_ready(session)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "LIVEKIT_URL": sandbox.url.replace("http://", "ws://"),
            "LIVEKIT_API_KEY": KEY,
            "LIVEKIT_API_SECRET": SECRET,
            "OPENAI_API_KEY": "sk-test",
            "OPENAI_MODEL": "gpt-4.1-mini",
            "DEEPGRAM_API_KEY": "dg",
            "CARTESIA_API_KEY": "ca",
            "AGENT_HTTP_HOST": "127.0.0.1",
        }
        proc = await asyncio.to_thread(
            run_to_end, [sys.executable, "-m", "agent", "start"], tmp_path, env, 40
        )
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "is this project's sandbox" in proc.stderr
        assert "failed to connect to livekit" not in proc.stderr + proc.stdout
        assert "hosts no agent worker" in sandbox.logs()
    finally:
        sandbox.stop()
