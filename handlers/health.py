"""Operations endpoints: liveness, readiness and Prometheus metrics (no token needed)."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from aiohttp import hdrs, web

from common.livekit.client import LiveKitError, LiveKitOverLimit, check_reachable
from common.metrics import DatabaseCounts
from common.repeats import Repeats
from common.storage.base import DatabaseError
from handlers.errors import json_error
from handlers.http import Reply, RouteDoc, add_route, json_answer
from handlers.keys import CALLS, CONFIG, METRICS, SETTINGS, STORE
from handlers.schemas import Ok, Ready

logger = logging.getLogger(__name__)

# Each probe's bound; the three run at once, so /readyz answers within it (a load balancer's
# probe gives up after a few seconds; a LiveKit request's own bound is 10 s).
PROBE_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    """Alive unless only a restart can help: no dependency's failure (a database down, a
    LiveKit not answering) fails it, as restarting would not mend them; a calls.db removed or
    replaced under the server did answer 200 here for good while every write was refused
    ("restart the server", /readyz 503), and a platform restarting on liveness never did."""
    store = request.app.get(STORE)
    if store is not None and store.restart_needed:
        return json_error(
            503,
            "calls database: its file was removed or replaced under the running server;"
            " no write can succeed until the server is restarted",
        )
    return json_answer(Ok())


Failures = list[dict[str, str]]
T = TypeVar("T")


@dataclass(frozen=True)
class Readiness:
    """A readiness check's verdict: what fails it (`failures`), and what answers but will not
    serve now without failing it (`degraded`: LiveKit over a limit of its own)."""

    failures: Failures
    degraded: Failures


# A failure's words for /readyz's answer where the log's name more (a database's hosts).
PUBLIC = "public"
# How a component that answers but is over a limit is named in the log's lines about it.
OVER_LIMIT = " over a limit"


class SharedCheck(Generic[T]):
    """One check at a time for every request, its result given again for `reuse_s` after it
    ends. The readiness check writes to the database, syncs a file and asks LiveKit, and
    /readyz needs no token (64 looping clients made 600 of each a second); /metrics counts
    the calls table (a full scan: 20 clients scraping it with 1,000,000 calls made placing a
    call take 3.2 s). `last` is the last result (None before one)."""

    def __init__(self, reuse_s: float) -> None:
        self._reuse_s = reuse_s
        self._running: asyncio.Future[T] | None = None
        self.last: T | None = None
        self._ended_at = -math.inf

    async def run(self, check: Callable[[], Awaitable[T]]) -> T:
        if self._running is None:
            if self.last is not None and time.monotonic() - self._ended_at < self._reuse_s:
                return self.last
            self._running = asyncio.ensure_future(check())
            self._running.add_done_callback(self._ended)
        # shielded: a client that goes away does not cancel the check the others wait for
        return await asyncio.shield(self._running)

    def _ended(self, done: asyncio.Future[T]) -> None:
        self._running = None
        if not done.cancelled() and done.exception() is None:
            self.last, self._ended_at = done.result(), time.monotonic()


READINESS = web.AppKey("readiness", SharedCheck[Readiness])
NOT_READY_SAID = web.AppKey("not_ready_said", Repeats)  # each component's failure, a minute
# The components that failed, and since when (monotonic), until the log says they pass again
# (once a minute at most, as their failures: a component failing every other probe would
# write two lines a probe); then a new failure is said at once, not held back as a repeat.
NOT_READY_SINCE = web.AppKey("not_ready_since", dict[str, float])
READY_AGAIN_SAID = web.AppKey("ready_again_said", Repeats)
COUNTS = web.AppKey("database_counts", SharedCheck[DatabaseCounts])


async def readyz(request: web.Request) -> web.Response:
    """Ready when a call could be placed: the database takes a write, config.json's directory
    takes a file (and config.json itself a write, after one failed), and LiveKit (or the
    sandbox) answers our key; LiveKit over a limit of its own is ready, said `degraded`. The
    probes run at once."""
    readiness = await request.app[READINESS].run(lambda: _check(request.app))
    if readiness.failures:
        return json_error(503, "not ready", readiness.failures)
    if readiness.degraded:
        return json_answer(Ready.model_validate({"degraded": readiness.degraded}))
    return json_answer(Ok())


_PATH_ENDS = r"(?=$|[\s/:;,'\"()])"  # where a path named in a message ends
_DIRECTORY_ENDS = r"(?=$|[\s:;,'\"()])"  # a directory named whole, not a path inside it
# An absolute path left in a message once the known ones are named (its last part is kept).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])/(?:[^\s/:;,'\"()]+/)*([^\s/:;,'\"()]+)/?")


def without_paths(text: str, files: Iterable[Path]) -> str:
    """`text` as an answer without a token may show it: each of `files` named by its file
    name (its directory as "<name>'s directory": a directory two of them share is named by the
    first), any other absolute path by its last part.
    /readyz named config.json's absolute path (a user's home, a mount), and any web page can
    read it through a name re-pointed at 127.0.0.1: the log line says it in full."""
    named: dict[str, tuple[str, str]] = {}
    for file in files:
        for form in {str(file), os.path.abspath(file), os.path.realpath(file)}:
            named[form] = (file.name, _PATH_ENDS)
            # Only the directory itself: a file in it (config.json.lock beside config.json)
            # was named "calls.db's directory/config.json.lock" where both share one.
            named.setdefault(os.path.dirname(form), (f"{file.name}'s directory", _DIRECTORY_ENDS))
    for path in sorted(named, key=len, reverse=True):  # a file before its directory
        if path not in ("", "/"):  # whole: a directory /app is not the start of /application
            name, ends = named[path]
            text = re.sub(re.escape(path) + ends, _literally(name), text)
    return _ABSOLUTE_PATH.sub(r"…/\1", text)


def _literally(name: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: name  # a name's backslashes are no group references


async def _check(app: web.Application) -> Readiness:
    readiness = await _probe(app)
    settings = app[SETTINGS]
    config_files = (settings.config_path, app[CONFIG].target)
    for failure in readiness.failures:
        if (more := app[NOT_READY_SAID].due(failure["component"])) is not None:
            logger.warning("not ready: %s: %s%s", failure["component"], failure["error"], more)
        # The component's own file first: a directory config.json and calls.db share is named
        # by it (config's failure read "calls.db's directory: Too many open files").
        files = (
            (settings.calls_db_path, *config_files)
            if failure["component"] == "database"
            else (*config_files, settings.calls_db_path)
        )
        failure["error"] = without_paths(failure.pop(PUBLIC, failure["error"]), files)
    for degraded in readiness.degraded:
        if (more := app[NOT_READY_SAID].due(degraded["component"] + OVER_LIMIT)) is not None:
            logger.warning(
                "ready, but %s is over a limit of its own (it answers: nothing to fix in this"
                " server's settings; calls placed meanwhile are answered 503 with Retry-After):"
                " %s%s",
                degraded["component"],
                degraded["error"],
                more,
            )
    app[METRICS].livekit_over_limit.set(1 if readiness.degraded else 0)
    since = app[NOT_READY_SINCE]
    failing = {failure["component"] for failure in readiness.failures}
    failing |= {degraded["component"] + OVER_LIMIT for degraded in readiness.degraded}
    for component in sorted(since.keys() - failing):
        if app[READY_AGAIN_SAID].due(component) is None:
            continue  # said at a later check: the last line must not stay "not ready"
        failed_s = time.monotonic() - since.pop(component)
        if component.endswith(OVER_LIMIT):
            logger.info(
                "%s is no longer over a limit (first said %.0f s ago)",
                component.removesuffix(OVER_LIMIT),
                failed_s,
            )
        else:
            logger.info("ready again: %s (first failed %.0f s ago)", component, failed_s)
        app[NOT_READY_SAID].forget(component)
    for component in failing:
        since.setdefault(component, time.monotonic())
    return readiness


async def _within(probe: Awaitable[None], timeout_s: float) -> None:
    """`probe` awaited for `timeout_s` at most, then cancelled and left to end on its own:
    asyncio.wait_for also waited for the cancelled probe to end, and a write cancelled on a
    PostgreSQL that does not answer (SIGSTOPped, its host frozen, a network cut) ends only
    once asyncpg gave up its rollback and its connection: /readyz answered after 17 s, not
    within the probes' bound, and so did every probe sharing that check."""
    task = asyncio.ensure_future(probe)
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    finally:
        if not task.done():  # past its bound (or the check itself cancelled)
            task.cancel()
            task.add_done_callback(_ended_unheard)


def _ended_unheard(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # a failure after its bound is the one already said: not logged


async def _probe(app: web.Application) -> Readiness:
    settings = app[SETTINGS]
    degraded: Failures = []

    async def database() -> dict[str, str] | None:
        try:
            await _within(app[STORE].probe_write(settings.instance_name), PROBE_TIMEOUT_S)
        except DatabaseError as exc:
            return {"component": "database", "error": str(exc)}
        except TimeoutError:  # was "timeout", alone: of what, and why?
            within = f"a write did not finish within {PROBE_TIMEOUT_S:g} s"
            return {
                "component": "database",
                "error": f"{within} ({app[STORE].stall_causes(public=False)})",
                PUBLIC: f"{within} ({app[STORE].stall_causes(public=True)})",
            }
        return None

    async def config() -> dict[str, str] | None:
        try:
            await asyncio.wait_for(app[CONFIG].probe_writable_async(), PROBE_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            error = (
                exc.strerror
                if isinstance(exc, OSError) and exc.strerror
                else f"a write did not finish within {PROBE_TIMEOUT_S:g} s (its lock held"
                " elsewhere, or its disk stalls)"
            )
            return {"component": "config", "error": f"{_config_part(app, exc)}: {error}"}
        return None

    async def livekit() -> dict[str, str] | None:
        try:
            await asyncio.wait_for(check_reachable(app[CALLS].lkapi), PROBE_TIMEOUT_S)
        except LiveKitOverLimit as exc:
            # It answered: reachable, our key's to use once it has room. LiveKit limits the
            # key (the project) every server shares, so every server failed its probe at once
            # and a load balancer took them all out: LiveKit's webhooks (the calls' outcomes),
            # the agents' reports and GET /calls were refused with them, a throttle made a
            # full outage. A call placed meanwhile is answered 503 with LiveKit's Retry-After.
            degraded.append({"component": "livekit", "error": exc.reason})
        except LiveKitError as exc:
            return {"component": "livekit", "error": exc.reason}
        except TimeoutError:
            return {
                "component": "livekit",
                "error": f"readiness probe: LiveKit did not answer within {PROBE_TIMEOUT_S:g} s",
            }
        return None

    failures = [f for f in await asyncio.gather(database(), config(), livekit()) if f]
    return Readiness(failures, degraded)


def _config_part(app: web.Application, exc: BaseException) -> str:
    """What the probe's failure is about: config.json, or its directory (the probe's own
    file, the writers' lock: the directory takes no new file)."""
    store = app[CONFIG]
    failed = exc.filename if isinstance(exc, OSError) else None
    if isinstance(failed, str) and failed not in (str(store.path), str(store.target)):
        return os.path.dirname(failed) or "."
    return str(store.path)


# How long a rendered /metrics page is given again to the scrapes that follow (METRICS_REUSE_S
# when that is shorter). /metrics needs no token, and rendering its ~120 series costs the loop
# 3-4 ms: ~250 scrapes a second from anyone who reaches the port held every other request
# (/healthz p50 20 ms, p95 50 ms at 380 scrapes/s); Prometheus scrapes every 15-60 s.
METRICS_PAGE_REUSE_S = 1.0
PAGE = web.AppKey("metrics_page", SharedCheck[bytes])


# The text format's media type with its version, as the format's content negotiation names
# it (PrometheusText0.0.4: what prometheus_client renders here, every name of ours a legacy
# one). The page said `text/plain` alone: Prometheus 3 reads the Content-Type strictly (a type
# it does not take fails the scrape unless the job sets fallback_scrape_protocol), and
# projects serving bare text/plain (Apache Pulsar, BookKeeper) added the version for it.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[PAGE].run(lambda: _metrics_page(request.app))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})


async def _metrics_page(app: web.Application) -> bytes:
    counts = app[COUNTS]
    store = app[STORE]

    async def count() -> DatabaseCounts:
        return DatabaseCounts(
            await store.count_by_status(),
            await store.count_pending_deliveries(),
            await store.count_given_up_events(),
        )

    try:
        # Bounded as the readiness probe is: a database that does not answer (cut off, its
        # host frozen) held each scrape 10-15 s, past Prometheus' 10 s scrape timeout, and the
        # server looked down (`up` 0) with every other metric lost. The count goes on for the
        # scrapes that follow (shared).
        fresh = await asyncio.wait_for(counts.run(count), PROBE_TIMEOUT_S)
        return app[METRICS].render(fresh, fresh=True)
    except (DatabaseError, TimeoutError):  # the last counts read, said to be so
        return app[METRICS].render(counts.last, fresh=False)


def setup(app: web.Application) -> None:
    app[READINESS] = SharedCheck[Readiness](app[SETTINGS].readyz_reuse_s)
    app[NOT_READY_SAID] = Repeats()
    app[NOT_READY_SINCE] = {}
    app[READY_AGAIN_SAID] = Repeats()
    app[COUNTS] = SharedCheck[DatabaseCounts](app[SETTINGS].metrics_reuse_s)
    app[PAGE] = SharedCheck[bytes](min(METRICS_PAGE_REUSE_S, app[SETTINGS].metrics_reuse_s))
    add_route(
        app,
        RouteDoc(
            "GET",
            "/healthz",
            "healthz",
            "Liveness",
            replies={
                200: Reply("Alive", Ok),
                503: Reply("Only a restart can help: the calls database was replaced under it"),
            },
            log_success=False,
        ),
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
                200: Reply("Ready (`degraded` names LiveKit over a limit of its own)", Ready),
                503: Reply("Not ready; `details` names the failing components"),
            },
            log_success=False,
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
            log_success=False,
        ),
        metrics,
    )
