"""Requests being handled, so that a stop can break off those still running when their time
is up.

On SIGTERM aiohttp waits the shutdown timeout for the requests in flight, then "cancels" each
one only by failing its body's read, and waits as long again for it: a handler reading no body
ran on. A 100,000-row CSV campaign upload, its body read whole and its rows being checked (55 s
on a loaded machine), took the stop 49 s past the signal, though the log said "requests in
flight get up to 25 s": past Kubernetes' 30 s grace, whose SIGKILL skips the stop's own work
(deliveries given back, campaigns handed over, the database closed). `stop(after_s)` cancels
each request still running `after_s` from the signal, as aiohttp itself did only once its
second wait was over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from handlers.http import declared_route

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The message of the CancelledError a request broken off by the stop gets.
BROKEN_OFF = "the server is stopping and this request ran past the wait for requests in flight"


class InFlight:
    def __init__(self) -> None:
        self._running: dict[asyncio.Task[object], web.Request] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, task: asyncio.Task[object], request: web.Request) -> None:
        self._running[task] = request

    def discard(self, task: asyncio.Task[object]) -> None:
        self._running.pop(task, None)

    def stop(self, after_s: float) -> None:
        """Break off, `after_s` from now, every request still running then."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(after_s, self._break_off, after_s)

    def _break_off(self, after_s: float) -> None:
        running = [(t, r) for t, r in self._running.items() if not t.done()]
        if not running:
            return
        routes = sorted({f"{r.method} {declared_route(r) or '(no route)'}" for _, r in running})
        logger.warning(
            "stopping: %d request(s) still running %.0f s after the signal broken off,"
            " unanswered (%s): their clients may send them again (a call or campaign with"
            " its Idempotency-Key gets the one it may have made)",
            len(running),
            after_s,
            ", ".join(routes),
        )
        for task, _ in running:
            task.cancel(BROKEN_OFF)


@web.middleware
async def tracked_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: each request's task, from its first middleware to its handler's answer."""
    task = asyncio.current_task()
    if task is None:  # not run as a task: nothing to break off
        return await handler(request)
    running = request.app[IN_FLIGHT]
    running.add(task, request)
    try:
        return await handler(request)
    finally:
        running.discard(task)


IN_FLIGHT = web.AppKey("in_flight", InFlight)
