"""A server's long-lived loops (the reaper, the event dispatcher and its take-over, the
webhook sender, the campaign scheduler), started again should one end before the stop.

Each loop catches what its own steps raise and goes on; what none of them catches is a
cancellation that is not the stop's (a `CancelledError` let out of a task it awaited, a
timeout's cancellation taken for its own by another scope), or a loop returning by a defect.
Such a loop ended unsaid, and what it did stopped for good while the server answered as ever:
a dead server's events never taken over, webhooks never sent, campaigns never driven.
A step of one that does not end (`SlowSteps`: a reaper pass, an event's subscriber) is said
with where it waits, since everything after it waits too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from common.repeats import Repeats

logger = logging.getLogger(__name__)

# Between a loop's end and its start again: a loop that ends at once, every time, is a defect
# said once a minute, not a busy loop.
RESTART_PAUSE_S = 1.0


async def kept_running(
    name: str,
    run: Callable[[], Coroutine[Any, Any, None]],
    pause_s: float = RESTART_PAUSE_S,
) -> None:
    """`run()` until this task is cancelled (the stop), started again `pause_s` after it
    ends any other way; each such end a CRITICAL line (once a minute) with what ended it."""
    repeats = Repeats()
    task = asyncio.current_task()
    while True:
        ended: BaseException | None = None
        try:
            await run()
        except asyncio.CancelledError as exc:
            ended = exc
        except Exception as exc:
            ended = exc
        if task is not None and task.cancelling():  # the stop asked: the loop ends
            if isinstance(ended, asyncio.CancelledError):
                raise ended
            return
        if (more := repeats.due(name)) is not None:
            how = "returned" if ended is None else f"ended by {type(ended).__name__}"
            logger.critical(
                "%s loop %s; started again in %.0f s (a defect: please report it)%s",
                name,
                how,
                pause_s,
                more,
                exc_info=ended,
            )
        await asyncio.sleep(pause_s)


def awaiting_at(task: asyncio.Task[Any]) -> str:
    """Where `task` waits: each coroutine of its await chain, outermost first, as
    `function (file:line)` (a task's own stack shows its outermost coroutine alone)."""
    places: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(places) < 40:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        code = frame.f_code
        places.append(f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " > ".join(places) or "(not waiting)"


class SlowSteps:
    """A WARNING, once a step, for a step of a long-lived loop still running `after_s` after
    it began, saying where it waits: a reaper pass or an event's subscriber that does not end
    held up everything after it (a dead server's events, every call's webhooks), unsaid."""

    def __init__(self, loop_name: str, after_s: float) -> None:
        self._loop_name = loop_name
        self._after_s = after_s
        self._timer: asyncio.TimerHandle | None = None
        self._began = 0.0

    def begin(self, what: Callable[[], str]) -> None:
        """A step began (`what` names it, asked only if it is said)."""
        self.end()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        self._began = loop.time()
        if task is not None:
            self._timer = loop.call_later(self._after_s, self._say, what, task)

    def end(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _say(self, what: Callable[[], str], task: asyncio.Task[Any]) -> None:
        self._timer = None
        logger.warning(
            "%s: %s has run for %.0f s and goes on; it waits at %s",
            self._loop_name,
            what(),
            asyncio.get_running_loop().time() - self._began,
            awaiting_at(task),
        )
