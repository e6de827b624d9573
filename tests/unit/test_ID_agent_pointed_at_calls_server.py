"""`python -m agent start` with LIVEKIT_URL set to a calls server's URL (PUBLIC_BASE_URL, or
LiveKit's webhook URL taken for LiveKit's): livekit-agents retried the server's 404 on
/agent for ~2 minutes (16 WARNINGs, `failed to connect to livekit ... 404, message='Invalid
response status'`), naming only the status, then exited; found running the worker against
`make run`. The start-up probe that names the sandbox now names a calls server too (its JSON
error, which no LiveKit answers), and the worker stops at once, exit 2, saying what to set."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from agent.cli import sandbox_problem
from tests.helpers import serving


async def test_a_calls_servers_url_is_said_to_be_no_livekit(client: TestClient[Any, Any]) -> None:
    base = f"ws://127.0.0.1:{client.port}"
    for url in (base, f"{base}/webhooks/livekit"):
        problem = await asyncio.to_thread(sandbox_problem, url)
        assert problem is not None, url
        assert problem.startswith(f"LIVEKIT_URL ({url}) is a calls server"), problem
        assert "set LIVEKIT_URL to the LiveKit server's URL" in problem


async def test_another_json_404_is_left_to_the_worker() -> None:
    """A 404 in JSON that is not the calls server's error shape: no verdict."""

    async def not_found(_request: web.Request) -> web.Response:
        return web.json_response({"error": "not found"}, status=404)

    async with serving(not_found, "/agent", "GET") as base:
        url = base.replace("http://", "ws://")
        assert await asyncio.to_thread(sandbox_problem, url) is None
