"""Host name lookups of customer webhooks that one slow name, or many, cannot hold up.

The lookups are the OS getaddrinfo (`PooledResolver` in guard.py says why), on threads of
their own: an await's timeout cannot stop a getaddrinfo, so a name whose name server never
answers holds its thread for the resolver's whole timeout (glibc: 5 s a try, two tries, each
name server in turn). On 4 threads shared by every lookup, 6 customer names that answered
when their calls were placed and then stopped held up a healthy receiver's first event 7.7 s
(0.1 s without them); the checks of many such names in a campaign answered other clients'
`webhook_url` checks "not resolved within 3 s". So:

* One lookup of a name at a time: whoever asks for a name already being looked up waits for
  that lookup's answer (aiohttp shares one per host and port inside one connector; the
  placement checks shared none). A lookup nobody waits for any more before it started is
  dropped: it would only take a thread from the lookups someone waits for.
* Threads are made as lookups need them, up to MAX_LOOKUPS: a name that hangs holds one,
  not the lookups of the others. (Deliveries start new names' lookups at a bounded pace:
  60 connections at most, each send given up after 15 s; with glibc's defaults, 10 s a
  name server, that is some 60 names hanging at once, under the threads left to them.)
* Names slow lately (a lookup of it took longer than SLOW_S within SLOW_MEMORY_S, or one is
  running that long now) hold SLOW_LANES threads at most, counting every lookup running
  longer than SLOW_S. Past that such a name is not looked up: it is answered at once with
  `LookupsBusy` (an OSError: a delivery is retried on its schedule, a placement is told to
  retry later). However many names hang, again and again, the other threads are left to
  the names that answer.

What this cannot do: a name never slow before is looked up like any other, so more than
MAX_LOOKUPS - SLOW_LANES names that all start hanging within one resolver timeout still hold
every thread until it ends (each such name once: from then on it is known slow).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from common.own_threads import OwnThreads

logger = logging.getLogger(__name__)

MAX_LOOKUPS = 128
SLOW_LANES = 16
SLOW_S = 1.0
SLOW_MEMORY_S = 600.0
SLOW_MEMORY_MAX = 4096  # names remembered slow at most (the longest known forgotten first)
BUSY_WARNING_S = 60.0  # the warning that slow names are refused, at most this often

AddrInfo = tuple[Any, ...]
_FLAGS = socket.AI_ADDRCONFIG


class LookupsBusy(OSError):
    """The name was slow to resolve lately and SLOW_LANES lookups of slow names are running:
    it is not looked up now (try again later)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(eq=False)
class _Lookup:
    name: str
    family: int
    known_slow: bool
    started: float | None = None  # when its thread began it
    future: Future[None] | None = None
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[list[AddrInfo]]]] = field(
        default_factory=list
    )


def _settle(
    waiter: asyncio.Future[list[AddrInfo]],
    found: list[AddrInfo] | None,
    error: BaseException | None,
) -> None:
    if waiter.done():
        return
    if error is not None:
        # each waiter its own copy: one exception raised in several tasks grows one traceback
        waiter.set_exception(copy.copy(error))
    else:
        waiter.set_result(list(found or ()))


class NameLookups:
    """getaddrinfo for webhook hosts on up to `lanes` threads named `name_N`, by the rules
    above."""

    _every: weakref.WeakSet[NameLookups] = weakref.WeakSet()

    @classmethod
    def thread_prefixes(cls) -> tuple[str, ...]:
        """How the names of the threads of every NameLookups begin."""
        return tuple(f"{lookups._name}_" for lookups in list(cls._every))

    @classmethod
    def names_held(cls) -> list[str]:
        """The names a thread of any NameLookups is looking up now."""
        held: set[str] = set()
        for lookups in list(cls._every):
            with lookups._lock:
                held.update(
                    one.name for one in lookups._running.values() if one.started is not None
                )
        return sorted(held)

    def __init__(
        self,
        name: str,
        *,
        lanes: int = MAX_LOOKUPS,
        slow_lanes: int = SLOW_LANES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threads = OwnThreads(lanes, name)
        self._name = name
        self._slow_lanes = slow_lanes
        self._clock = clock
        self._lock = threading.Lock()  # lookups end on their threads; asked from any loop
        self._running: dict[tuple[str, int], _Lookup] = {}
        self._slow: dict[str, float] = {}  # name -> when a lookup of it was last slow
        self._warned_at = -BUSY_WARNING_S
        NameLookups._every.add(self)

    async def getaddrinfo(self, host: str, family: int) -> list[AddrInfo]:
        """socket.getaddrinfo(host, 0, family, SOCK_STREAM, 0, AI_ADDRCONFIG): the port is the
        caller's to put in, so a name asked for on several ports is looked up once."""
        key = (host.lower(), int(family))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[AddrInfo]] = loop.create_future()
        with self._lock:
            lookup = self._running.get(key)
            if lookup is None:
                lookup = self._start(key, host)
            lookup.waiters.append((loop, waiter))
        try:
            return await waiter
        finally:
            self._leave(key, lookup, loop, waiter)

    def _start(self, key: tuple[str, int], host: str) -> _Lookup:
        """A new lookup of `key` (under the lock), or LookupsBusy."""
        now = self._clock()
        name = key[0]
        known_slow = self._known_slow(name, now)
        if known_slow:
            held = sum(1 for running in self._running.values() if self._is_slow(running, now))
            if held >= self._slow_lanes:
                self._warn_busy(held, now)
                raise LookupsBusy(
                    f"{host} was slow to resolve lately, and {held} lookups of slow names are"
                    " still running: not looked up again until fewer are"
                )
        lookup = _Lookup(name, key[1], known_slow)
        self._running[key] = lookup
        lookup.future = self._threads.submit(self._look_up, key, lookup, host)
        return lookup

    def _known_slow(self, name: str, now: float) -> bool:
        since = self._slow.get(name)
        if since is not None and now - since < SLOW_MEMORY_S:
            return True
        return any(
            running.name == name and running.started is not None and now - running.started > SLOW_S
            for running in self._running.values()
        )

    def _is_slow(self, lookup: _Lookup, now: float) -> bool:
        return lookup.known_slow or (lookup.started is not None and now - lookup.started > SLOW_S)

    def _warn_busy(self, held: int, now: float) -> None:
        if now - self._warned_at < BUSY_WARNING_S:
            return
        self._warned_at = now
        logger.warning(
            "%d webhook host lookups (%s) are of names slow to resolve; others such are not"
            " looked up until fewer run (their deliveries are retried, their placements told"
            " to retry later). Is the name server answering? Said at most every %g s",
            held,
            self._name,
            BUSY_WARNING_S,
        )

    def _look_up(self, key: tuple[str, int], lookup: _Lookup, host: str) -> None:
        """On a lane: the lookup, then its answer to every waiter, on the waiter's loop."""
        started = self._clock()
        with self._lock:
            lookup.started = started
        found: list[AddrInfo] | None = None
        error: BaseException | None = None
        try:
            found = socket.getaddrinfo(host, 0, key[1], socket.SOCK_STREAM, 0, _FLAGS)
        except Exception as exc:  # an OSError mostly; UnicodeError for an over-long label
            error = exc
        ended = self._clock()
        with self._lock:
            if self._running.get(key) is lookup:
                del self._running[key]
            self._slow.pop(key[0], None)  # re-entered last: the dict is oldest first
            if ended - started > SLOW_S:
                self._slow[key[0]] = ended
                if len(self._slow) > SLOW_MEMORY_MAX:
                    del self._slow[next(iter(self._slow))]
            waiters, lookup.waiters = lookup.waiters, []
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_settle, waiter, found, error)
            except RuntimeError:  # that loop is closed: nobody there waits any more
                pass

    def _leave(
        self,
        key: tuple[str, int],
        lookup: _Lookup,
        loop: asyncio.AbstractEventLoop,
        waiter: asyncio.Future[list[AddrInfo]],
    ) -> None:
        """A waiter is done (answered, or gave up): the last to give up on a lookup that has
        not started drops it."""
        with self._lock:
            if (loop, waiter) in lookup.waiters:
                lookup.waiters.remove((loop, waiter))
            if lookup.waiters or lookup.future is None:
                return
            if lookup.future.cancel() and self._running.get(key) is lookup:
                del self._running[key]
