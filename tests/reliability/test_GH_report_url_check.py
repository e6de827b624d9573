"""Where PUBLIC_BASE_URL leads is said at start-up. Behind a proxy that keeps the path prefix
(`location /voice/ { proxy_pass http://calls; }` without the trailing slash that strips it),
a host or port mistyped, or a redirect to https, every agent report of every call (the answer,
the transcript, the analysis) was refused or lost on the agents' hosts, and the server, with
a real LiveKit, said nothing at all (seen with the real server.py behind a small proxy
standing in for nginx). It now asks its reports route through PUBLIC_BASE_URL once started
(a GET, which that route answers 405 without doing anything) and says what it found."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server import report_url_refusal
from tests.processes import ServerProcess, free_port

KEY = "APIreportcheck"
SECRET = "report-check-secret-0123456789abcdef0123"


async def serving(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def proxy(upstream: str, *, strip: bool) -> web.Application:
    """nginx at /voice/ in front of `upstream`: the prefix taken off (`strip`) or passed on."""

    async def forward(request: web.Request) -> web.Response:
        path = request.rel_url.raw_path_qs
        if not path.startswith("/voice/"):
            return web.Response(
                status=404, text="<html>404 Not Found</html>", content_type="text/html"
            )
        path = path.removeprefix("/voice") if strip else path
        async with (
            aiohttp.ClientSession() as session,
            session.request(request.method, upstream + path, allow_redirects=False) as answer,
        ):
            kept = {k: v for k, v in answer.headers.items() if k in ("Content-Type", "Allow")}
            return web.Response(status=answer.status, body=await answer.read(), headers=kept)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def said(server: ServerProcess, text: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = next((ln for ln in server.logs().splitlines() if text in ln), None)
        if line is not None:
            return line
        assert server.proc.poll() is None, server.logs()
        await asyncio.sleep(0.1)
    raise AssertionError(f"never said {text!r}:\n{server.logs()}")


@pytest.fixture
async def behind_proxy(tmp_path: Path, processes: list[Any]) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(*, strip: bool) -> ServerProcess:
        port, proxy_port = free_port(), free_port()
        runners.append(await serving(proxy(f"http://127.0.0.1:{port}", strip=strip), proxy_port))
        env = {
            "LIVEKIT_URL": f"http://127.0.0.1:{free_port()}",  # a real LiveKit's rules
            "LIVEKIT_API_KEY": KEY,
            "LIVEKIT_API_SECRET": SECRET,
            "SIP_OUTBOUND_TRUNK_ID": "ST_reportcheck",
            "CONFIG_PATH": str(tmp_path / f"{port}-config.json"),
            "CALLS_DB_PATH": str(tmp_path / f"{port}-calls.db"),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{proxy_port}/voice",
        }
        server = ServerProcess(tmp_path, f"server-{port}", env, port=port)
        processes.append(server)
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_proxy_that_keeps_the_path_prefix_is_said_at_start_up(behind_proxy: Any) -> None:
    server = await behind_proxy(strip=False)
    line = await said(server, "agents' reports go to")
    assert " WARNING " in line, line
    assert "has no route /voice/agent/reports" in line, line
    assert "answer, transcript and analysis are lost" in line, line


async def test_a_proxy_that_takes_it_off_is_said_to_lead_to_a_calls_server(
    behind_proxy: Any,
) -> None:
    server = await behind_proxy(strip=True)
    line = await said(server, "agents' reports go to")
    assert " INFO " in line and line.endswith("which leads to a calls server"), line


async def test_what_is_not_a_calls_server_is_told_apart(aiohttp_server: Any) -> None:
    async def moved(_request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("https://calls.example.com/agent/reports")

    async def page(_request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>404</html>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/moved/agent/reports", moved)
    app.router.add_get("/{tail:.*}", page)
    site = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        redirect = await report_url_refusal(str(site.make_url("/moved/agent/reports")), session)
        other = await report_url_refusal(str(site.make_url("/agent/reports")), session)
        nobody = await report_url_refusal(f"http://127.0.0.1:{free_port()}/agent/reports", session)
    assert redirect is not None and redirect[1], redirect
    assert redirect[0].startswith("it redirects (HTTP 301 to https://calls.example.com/"), redirect
    assert other == ("it answers HTTP 404, not as a calls server does", False)
    assert nobody is not None and nobody[0].startswith("it cannot be reached"), nobody


async def test_an_answer_that_never_ends_is_not_read_whole(aiohttp_server: Any) -> None:
    """PUBLIC_BASE_URL leading to something that streams without end (a media server, a
    misrouted download): what came within the check's 5 s was all read into memory (~1 GB a
    second on loopback); the check reads a calls server's error's worth and tells."""
    sent: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        chunk = b"x" * 65536
        for _ in range(100_000):  # bounded: 6.5 GB, more than the check's 5 s could take
            await response.write(chunk)
            sent.append(len(chunk))
        return response

    app = web.Application()
    app.router.add_get("/agent/reports", endless)
    site = await aiohttp_server(app)
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        refusal = await report_url_refusal(str(site.make_url("/agent/reports")), session)
    assert refusal == ("it answers HTTP 200, not as a calls server does", False)
    assert time.monotonic() - started < 3.0  # not the 5 s timeout
    assert sum(sent) < 64 * 1024 * 1024, sum(sent)  # what the socket's buffers took, not GBs
