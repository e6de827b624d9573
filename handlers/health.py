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

# Each probe's bound; the three run at once, so /readyz answers within it (a load balancer's
# probe gives up after a few seconds; a LiveKit request's own bound is 10 s).
PROBE_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return json_answer(Ok())


async def readyz(request: web.Request) -> web.Response:
    """Ready when a call could be placed: the database takes a write, config.json's directory
    takes a file, and LiveKit (or the sandbox) accepts our key. The probes run at once."""
    settings = request.app[SETTINGS]

    async def database() -> dict[str, str] | None:
        try:
            probe = request.app[STORE].probe_write(settings.instance_name)
            await asyncio.wait_for(probe, timeout=PROBE_TIMEOUT_S)
        except (DatabaseError, TimeoutError) as exc:
            return {"component": "database", "error": str(exc) or "timeout"}
        return None

    async def config() -> dict[str, str] | None:
        try:
            await asyncio.wait_for(request.app[CONFIG].probe_writable_async(), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            error = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timeout"
            return {"component": "config", "error": f"{settings.config_path}: {error}"}
        return None

    async def livekit() -> dict[str, str] | None:
        try:
            await asyncio.wait_for(check_reachable(request.app[CALLS].lkapi), PROBE_TIMEOUT_S)
        except LiveKitError as exc:
            return {"component": "livekit", "error": exc.reason}
        except TimeoutError:
            return {
                "component": "livekit",
                "error": f"readiness probe: LiveKit did not answer within {PROBE_TIMEOUT_S:g} s",
            }
        return None

    failures = [f for f in await asyncio.gather(database(), config(), livekit()) if f]
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
