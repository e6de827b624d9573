"""Operations endpoints: liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from common.livekit.client import LiveKitError, check_reachable
from common.storage.base import DatabaseError
from handlers.errors import json_error
from handlers.http import Reply, RouteDoc, add_route, json_answer
from handlers.keys import CALLS, CONFIG, METRICS, SETTINGS, STORE
from handlers.schemas import Ok

PROBE_TIMEOUT_S = 5.0


async def healthz(request: web.Request) -> web.Response:
    return json_answer(Ok())


async def readyz(request: web.Request) -> web.Response:
    """Ready when a call could be placed: the database takes a write, config.json's directory
    takes a file, and LiveKit (or the sandbox) accepts our key."""
    failures: list[dict[str, str]] = []
    settings = request.app[SETTINGS]
    try:
        probe = request.app[STORE].probe_write(settings.instance_name)
        await asyncio.wait_for(probe, timeout=PROBE_TIMEOUT_S)
    except (DatabaseError, TimeoutError) as exc:
        failures.append({"component": "database", "error": str(exc) or "timeout"})
    try:
        await asyncio.wait_for(request.app[CONFIG].probe_writable_async(), PROBE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timeout"
        failures.append({"component": "config", "error": f"{settings.config_path}: {error}"})
    try:
        await check_reachable(request.app[CALLS].lkapi)
    except LiveKitError as exc:
        failures.append({"component": "livekit", "error": exc.reason})
    if failures:
        return json_error(503, "not ready", failures)
    return json_answer(Ok())


async def metrics(request: web.Request) -> web.Response:
    try:
        by_status = await request.app[STORE].count_by_status()
    except DatabaseError:
        by_status = {}
    body = request.app[METRICS].render(by_status)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def setup(app: web.Application) -> None:
    add_route(
        app,
        RouteDoc("GET", "/healthz", "healthz", "Liveness", replies={200: Reply("Alive", Ok)}),
        healthz,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/readyz",
            "readyz",
            "Readiness: a call could be placed (database write, config.json directory, LiveKit)",
            replies={
                200: Reply("Ready", Ok),
                503: Reply("Not ready; `details` names the failing components"),
            },
        ),
        readyz,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/metrics",
            "metrics",
            "Prometheus metrics",
            replies={200: Reply("Prometheus text format", content_type="text/plain")},
        ),
        metrics,
    )
