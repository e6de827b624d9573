"""Operations endpoints: liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from common.calls_db import DatabaseError
from common.livekit_calls import LiveKitError, check_reachable
from handlers.context import CALLS, DB, METRICS, SETTINGS, STORE, json_error

logger = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when a call could be placed: the database takes a write, config.json's directory
    takes a file, and LiveKit (or the sandbox) accepts our key."""
    failures: list[dict[str, str]] = []
    settings = request.app[SETTINGS]
    try:
        await asyncio.wait_for(request.app[DB].probe_write(settings.instance_name), timeout=5)
    except (DatabaseError, TimeoutError) as exc:
        failures.append({"component": "database", "error": str(exc) or "timeout"})
    try:
        await asyncio.wait_for(request.app[STORE].probe_writable_async(), timeout=5)
    except (OSError, TimeoutError) as exc:
        error = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timeout"
        failures.append({"component": "config", "error": f"{settings.config_path}: {error}"})
    try:
        await check_reachable(request.app[CALLS].lkapi)
    except LiveKitError as exc:
        failures.append({"component": "livekit", "error": exc.reason})
    if failures:
        return json_error(503, "not ready", failures)
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    try:
        by_status = await request.app[DB].count_by_status()
    except DatabaseError:
        by_status = {}
    body = request.app[METRICS].render(by_status)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
