"""A sliding-window limit of accepted calls per client per minute (pure, clock injected)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def _window(self, client: str) -> deque[float]:
        now = self._clock()
        hits = self._hits.setdefault(client, deque())
        while hits and hits[0] <= now - WINDOW_S:
            hits.popleft()
        return hits

    def retry_after(self, client: str) -> int:
        """0 if `client` may place a call now, else whole seconds until it may."""
        hits = self._window(client)
        if len(hits) < self.per_minute:
            return 0
        return max(1, math.ceil(hits[0] + WINDOW_S - self._clock()))

    def record(self, client: str) -> None:
        """Count one accepted call; forget idle clients so memory follows active ones."""
        self._window(client).append(self._clock())
        if len(self._hits) > 10_000:
            cutoff = self._clock() - WINDOW_S
            for key in [k for k, v in self._hits.items() if not v or v[-1] <= cutoff]:
                del self._hits[key]

    def forget_last(self, client: str) -> None:
        """Undo the latest `record` for `client` (the call was refused after all)."""
        hits = self._hits.get(client)
        if hits:
            hits.pop()
