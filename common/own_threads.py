"""A few threads of their own for one kind of blocking work, apart from the loop's default
executor: config.json's writes and the readiness probe run there, and work that may hold a
thread long (a name server that never answers, a 64 MiB recipient list to parse) must not
hold them up. Only one another."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class OwnThreads:
    """`count` threads named `name-N`, made when first used (by any event loop)."""

    _every: weakref.WeakSet[OwnThreads] = weakref.WeakSet()

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        OwnThreads._every.add(self)

    @classmethod
    def close_all(cls) -> None:
        """The process is stopping: the idle threads of every pool end now, without waiting
        for one still at its work (made again if used after). Left open, an idle thread of a
        pool used once (a DNC list or a campaign parsed, a webhook_url's host looked up)
        waited for work for good, and the stop took it for a file operation held by a
        stalled disk: 2 s more, then an ERROR "exiting without 3 thread(s) still held"."""
        for threads in list(cls._every):
            with threads._lock:
                pool, threads._pool = threads._pool, None
            if pool is not None:
                pool.shutdown(wait=False)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """fn(*args) on one of these threads, as soon as one is free (from any thread)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._count, thread_name_prefix=self._name)
            return self._pool.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on one of these threads (as `run_in_executor` runs it)."""
        return await asyncio.wrap_future(self.submit(fn, *args))
