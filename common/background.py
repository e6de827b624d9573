"""A server's long-lived loops (the reaper, the event dispatcher and its take-over, the
webhook sender, the campaign scheduler), started again should one end before the stop.

Each loop catches what its own steps raise and goes on; what none of them catches is a
cancellation that is not the stop's (a `CancelledError` let out of a task it awaited, a
timeout's cancellation taken for its own by another scope), or a loop returning by a defect.
Such a loop ended unsaid, and what it did stopped for good while the server answered as ever:
a dead server's events never taken over, webhooks never sent, campaigns never driven.
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
