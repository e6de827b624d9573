"""Request bodies being read, so that a stop can end their reads at once.

aiohttp reads no byte that arrives after the stop signal: a request still uploading its body
then waited out the whole shutdown timeout (25 s) and its connection closed with no answer
(probe AO). Each read's time bound (`handlers.http.arriving_in_time`), and each wait of a
campaign upload for its turn before its read (`handlers.campaigns.upload_turn`), is
registered here; `stop()` makes every one run out now, and the request is answered 503
(nothing was done: its body never arrived whole), as is any read that begins after it.
"""

from __future__ import annotations

import asyncio


class BodyReads:
    def __init__(self) -> None:
        self._bounds: set[asyncio.Timeout] = set()
        self.stopping = False

    def add(self, bound: asyncio.Timeout) -> None:
        self._bounds.add(bound)
        if self.stopping:
            bound.reschedule(asyncio.get_running_loop().time())

    def discard(self, bound: asyncio.Timeout) -> None:
        self._bounds.discard(bound)

    def stop(self) -> None:
        """End every read under way, and every one to come."""
        self.stopping = True
        now = asyncio.get_running_loop().time()
        for bound in self._bounds:
            bound.reschedule(now)
