"""`make agent` with LIVEKIT_URL pointed at `make run`'s embedded sandbox (a newcomer's
guess after "missing LIVEKIT_URL"), its keys left as the sandbox's own. The worker said the
LiveKit key and secret and the three providers' keys were missing, "the sandbox's development
LiveKit key and secret ... cannot be used with a real LiveKit": sent to get a LiveKit's and
the providers' keys, it was told only once all were set that the URL was the sandbox, which
needs no worker. It now says that first."""

from __future__ import annotations

import asyncio
from pathlib import Path

from common.settings import DEV_API_KEY, DEV_API_SECRET
from sandbox.server import Sandbox
from tests.unit.test_agent_cli import run_agent_here


async def test_the_sandboxs_url_with_its_keys_is_said_to_be_the_sandbox(tmp_path: Path) -> None:
    sandbox = Sandbox(api_key=DEV_API_KEY, api_secret=DEV_API_SECRET, webhook_url=None)
    await sandbox.start()
    try:
        proc = await asyncio.to_thread(
            run_agent_here,
            ["start"],
            tmp_path,
            LIVEKIT_URL=sandbox.url.replace("http://", "ws://"),
            OPENAI_MODEL="gpt-4.1-mini",
        )
    finally:
        await sandbox.stop()

    assert proc.returncode == 2
    assert proc.stderr.startswith(f"agent: LIVEKIT_URL ({sandbox.url.replace('http', 'ws')})")
    assert "is this project's sandbox, which plays the agent's part itself" in proc.stderr
    assert "missing" not in proc.stderr


async def test_a_real_livekits_url_with_the_sandboxs_keys_is_still_said_missing(
    tmp_path: Path,
) -> None:
    proc = await asyncio.to_thread(
        run_agent_here,
        ["start"],
        tmp_path,
        LIVEKIT_URL="wss://example.livekit.cloud",
        OPENAI_MODEL="gpt-4.1-mini",
    )

    assert proc.returncode == 2
    assert proc.stderr.startswith(
        "agent: cannot run 'start': missing LIVEKIT_API_KEY, LIVEKIT_API_SECRET,"
    )
    assert "cannot be used with a real LiveKit" in proc.stderr
