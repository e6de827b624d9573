"""CPU-bound Python work on the event loop, in turns that leave room for everyone else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# Work done between two pauses, and the pause. A bare `asyncio.sleep(0)` lets the loop's
# other tasks run but hands the GIL straight back to the loop's thread: the database's thread
# (SQLite runs there), which needs the GIL again after each statement, waited for the whole
# work (a GET /calls took 6.7 s while a 100,000-row campaign was checked). A pause in the
# selector (the GIL released) lets it run; 1 ms in 6 costs the work ~17% more time.
SLICE_S = 0.005
PAUSE_S = 0.001


class Turns:
    """Call `take()` between two units of a long piece of work on the loop: after each
    `slice_s` of work it pauses `pause_s`, in which the loop serves others and other
    threads get the GIL."""

    def __init__(
        self,
        slice_s: float = SLICE_S,
        pause_s: float = PAUSE_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._slice_s = slice_s
        self._pause_s = pause_s
        self._clock = clock
        self._since = clock()

    async def take(self) -> None:
        if self._clock() - self._since >= self._slice_s:
            await asyncio.sleep(self._pause_s)
            self._since = self._clock()
