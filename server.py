"""The outbound-calling HTTP service: `create_app(settings)` and `main()`.

Run it with `make run`. Without LIVEKIT_URL it starts the embedded loopback LiveKit sandbox
next to itself, so it works with no credentials and no phone is ever called.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from common.call_flow import CallService
from common.calls_db import CallsDB
from common.livekit_calls import REQUEST_TIMEOUT_S, create_client
from common.metrics import Metrics
from common.ratelimit import RateLimiter
from common.settings import Settings, SettingsError, configure_logging, load_settings
from common.update_config import configure_store
from handlers import access_log, calls, health, openapi, webhooks
from handlers.context import CALLS, DB, LIMITER, LIVEKIT_URL, METRICS, SETTINGS, STORE, json_error
from sandbox import Sandbox

logger = logging.getLogger("server")

# On SIGTERM the server stops listening, then waits this long for requests in flight. A call
# being placed may wait on LiveKit twice (dispatch, then SIP), each up to REQUEST_TIMEOUT_S.
# (aiohttp ignores bytes arriving after the signal, so a request still uploading its body when
# it comes is cancelled once this runs out; it never reached our handler's side effects.)
SHUTDOWN_TIMEOUT_S = 2 * REQUEST_TIMEOUT_S + 5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SANDBOX = web.AppKey("sandbox", Sandbox)


class StartupError(Exception):
    """A resource the app needs could not be set up; the message says which and what to do."""


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON; no stack trace ever reaches a client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason, headers=_allow_header(exc))
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


def _allow_header(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else None


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].requests.labels(route, request.method, str(response.status)).inc()
    return response


async def _database(app: web.Application) -> AsyncIterator[None]:
    app[DB] = await CallsDB.open(app[SETTINGS].calls_db_path)
    yield
    await app[DB].close()


async def _livekit(app: web.Application) -> AsyncIterator[None]:
    """The client session, the sandbox (when there is no LIVEKIT_URL), LiveKitAPI, the service."""
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
    sandbox: Sandbox | None = None
    try:
        if settings.livekit_url is None:
            sandbox = Sandbox(
                api_key=settings.livekit_api_key,
                api_secret=settings.livekit_api_secret,
                webhook_url=settings.webhook_url,
                time_scale=settings.sandbox_time_scale,
                port=settings.sandbox_port,
            )
            try:
                await sandbox.start()
            except OSError as exc:
                raise StartupError(
                    f"the embedded sandbox cannot listen on 127.0.0.1:{settings.sandbox_port}: "
                    f"{exc.strerror} (set SANDBOX_PORT, or LIVEKIT_URL for a real LiveKit)"
                ) from exc
            app[SANDBOX] = sandbox
            url = sandbox.url
        else:
            url = settings.livekit_url
        app[LIVEKIT_URL] = url
        lkapi = create_client(settings, url, session)
        app[CALLS] = CallService(settings, app[STORE], app[DB], lkapi, app[METRICS])
        yield
        await app[CALLS].aclose()
        await lkapi.aclose()
    finally:
        if sandbox is not None:
            await sandbox.stop()
        await session.close()


async def _reaper(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[CALLS].run_reaper(), name="call-reaper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: Settings) -> web.Application:
    """The application: routes, middlewares, and its long-lived resources in cleanup_ctx."""
    app = web.Application(
        middlewares=[errors_as_json, count_requests, calls.require_token],
        client_max_size=webhooks.MAX_WEBHOOK_BYTES,
    )
    access_log.install(drop_sandbox=settings.uses_sandbox)
    app[SETTINGS] = settings
    app[STORE] = configure_store(settings.config_path, record_ttl_s=settings.config_record_ttl_s)
    app[METRICS] = Metrics()
    app[LIMITER] = RateLimiter(settings.calls_rate_limit_per_min)
    app.cleanup_ctx.extend([_database, _livekit, _reaper])
    health.setup(app)
    calls.setup(app)
    webhooks.setup(app)
    openapi.setup(app)
    return app


def check_bind(settings: Settings) -> None:
    """Without CALLS_API_TOKEN the API is open, so it may only listen on loopback."""
    if settings.calls_api_token:
        return
    if not settings.is_loopback:
        raise SettingsError(
            f"CALLS_API_TOKEN must be set to listen on HOST={settings.host} "
            "(without a token the server binds loopback only)"
        )
    logger.warning("CALLS_API_TOKEN is not set: /calls is open to anyone on this machine")


def main() -> None:
    try:
        settings = load_settings()
        settings.require_livekit()
        configure_logging(settings)
        check_bind(settings)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    logger.info(
        "starting on http://%s:%d (webhooks at %s)",
        settings.host,
        settings.port,
        settings.webhook_path,
    )
    try:
        web.run_app(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            print=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
    except StartupError as exc:
        logger.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    except OSError as exc:  # most often: PORT already in use
        logger.error(
            "cannot listen on %s:%d: %s (set HOST/PORT)", settings.host, settings.port, exc.strerror
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
