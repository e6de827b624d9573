"""Repeated failures, said once a minute: an outage must not write a log line per attempt.

A database that is down fails every query: the campaign scheduler's poll (every second), each
driver's step, each request, and asyncpg's pool refilling itself (a 40-line traceback each
time). `Repeats.due(key)` says whether a failure of that kind is to be logged now: the first
one is, then at most one per `every_s`, and that line says how many were held back since.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

EVERY_S = 60.0


class Repeats:
    """Whether a failure of a kind is said now, and how many were held back. Used from
    several threads (config.json's writes run in the seed's callers' threads): a lost count
    is harmless, a loop over a dict another thread changes is not (`_forget_old`)."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.every_s = every_s
        self.clock = clock
        self._said: dict[str, tuple[float, int]] = {}  # key -> (said at, held back since)

    def due(self, key: str) -> str | None:
        """None: hold this one back. Else log it now, with the returned suffix appended
        ("" the first time, else how many were held back since the last line)."""
        now = self.clock()
        if len(self._said) >= MAX_KEYS and key not in self._said:
            self._forget_old(now)
        said = self._said.get(key)
        if said is not None and now - said[0] < self.every_s:
            self._said[key] = (said[0], said[1] + 1)
            return None
        held = said[1] if said is not None else 0
        self._said[key] = (now, 0)
        return f" ({held} more like it in the last {now - said[0]:.0f} s)" if said and held else ""

    def held_back(
        self, *, all_kinds: bool = False, keys: Collection[str] | None = None
    ) -> list[tuple[str, int, float]]:
        """The kinds with lines held back whose minute ran out (`all_kinds`: all, as the
        server stops), as (key, how many, over how many seconds); each starts a new minute.
        Only the next line of a kind said its count: the count of a burst that stopped
        (5,000 forged webhooks in ten seconds, then none) was never said. `keys`: of these
        kinds only."""
        now = self.clock()
        held = []
        for key, (at, count) in list(self._said.items()):  # a copy: see _forget_old
            if keys is not None and key not in keys:
                continue
            if count and (all_kinds or now - at >= self.every_s):
                held.append((key, count, now - at))
                self._said[key] = (now, 0)
        return held

    def forget(self, key: str) -> int:
        """The failure `key` is over: its next one is said at once. How many were held back
        since its last line (0 if none, or none was said)."""
        said = self._said.pop(key, None)
        return 0 if said is None else said[1]

    def _forget_old(self, now: float) -> None:
        """Keys are a receiver, a campaign, a kind of refusal: without end, one for each a
        client names. Those said over `every_s` ago go (their next one is said at once, as
        it would be); if none is that old, the oldest half."""
        # Copies, taken at once: config.json's writes note their failures from the threads
        # the seed's functions are called from, and a key another thread added or forgot
        # meanwhile made the loop over the dict itself raise ("dictionary changed size
        # during iteration"), out of a write that had been made.
        said = list(self._said.items())
        old = [k for k, (at, _) in said if now - at >= self.every_s]
        if not old:
            by_age = sorted(said, key=lambda item: item[1][0])
            old = [k for k, _ in by_age[: len(by_age) // 2]]
        for key in old:
            self._said.pop(key, None)


MAX_KEYS = 10_000


def say_held_back_at_stop(outage: Outage, repeats: Repeats, log: logging.Logger, what: str) -> None:
    """As the server stops, an outage not over (PostgreSQL, LiveKit, config.json failing
    until the stop): the failures of each of its kinds `repeats` held back since their last
    line, one line a kind. Those were counted only by a line a minute later or by the end of
    the outage, and a stop came before either: of a LiveKit down for the last 40 s of a
    server, one failure said, the others never counted."""
    for key, count, over_s in repeats.held_back(all_kinds=True, keys=outage.kinds):
        log.error(
            "%s: %d more failure(s) like '%s' in the last %.0f s held back, as the server stops",
            what,
            count,
            key,
            over_s,
        )


@dataclass(frozen=True)
class Ended:
    """An outage over (`Outage.ended`)."""

    first: str  # the kind of its first failure
    lasted_s: float
    held: int  # failures held back since their kinds' last lines (Repeats), never said else


class Outage:
    """The failures of one dependency (PostgreSQL, LiveKit's placements, config.json's
    writes), each said once a minute by its Repeats, and their end, said once: of an outage
    shorter than its minute only the first failure was said, the rest never counted, and
    nothing said it was over (only /readyz, when probed).

    Its end is said once a minute at most, as its failures are: each end forgets its kinds
    (the next failure is said at once), so a dependency failing one request in two (a node of
    several down, a pool short of connections under load) had each failure an ERROR at once
    and each success after it a WARNING, two lines a request. An end within the minute of
    the last one said is not one: the outage goes on, its failures held back and counted,
    until a success once that minute is over."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        self._every_s = every_s
        self._clock = clock
        self._since: float | None = None
        self._first = ""
        self._kinds: set[str] = set()
        self._ended_at: float | None = None  # when an end was last said
        self._back_at: float | None = None  # its first success since its last failure
        # config.json's writes note failures and successes from the seed's callers' threads:
        # a failure noted while an end was worked out made its loop over the kinds raise,
        # or its length None, out of a write that had been made.
        self._lock = threading.Lock()

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds (Repeats keys) that failed since the outage began: none when there is
        none."""
        with self._lock:
            return frozenset(self._kinds)

    def failed(self, kind: str) -> None:
        """A failure of `kind` (its Repeats key) noted."""
        with self._lock:
            if self._since is None:
                self._since, self._first = self._clock(), kind
            self._kinds.add(kind)
            self._back_at = None

    def ended(self, repeats: Repeats) -> Ended | None:
        """The outage, if there was one, ended now: its kinds forgotten by `repeats` (the
        next failure is said at once) and what to say of it; None when nothing failed, or
        an end was said less than a minute ago (the outage goes on)."""
        with self._lock:
            if self._since is None:
                return None
            now = self._clock()
            if self._back_at is None:
                self._back_at = now
            if self._ended_at is not None and now - self._ended_at < self._every_s:
                return None
            # Its length to its first success since its last failure: one held open (said a
            # minute after the last end) read "for 50 s" of one back after 10.
            first, lasted_s, kinds = self._first, self._back_at - self._since, tuple(self._kinds)
            self._since, self._first, self._ended_at, self._back_at = None, "", now, None
            self._kinds.clear()
        return Ended(first, lasted_s, sum(repeats.forget(kind) for kind in kinds))


class OneLineRepeats(logging.Filter):
    """For a library's logger (asyncpg's pool): each kind of message at most once per
    `every_s`, its traceback folded into one line (the exception's type and message)."""

    def __init__(self, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.repeats = Repeats(every_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        suffix = self.repeats.due(str(record.msg))
        if suffix is None:
            return False
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}{suffix}"
            record.args = ()
            record.exc_info = record.exc_text = None
        elif suffix:
            record.msg, record.args = f"{record.getMessage()}{suffix}", ()
        return True


ACCEPT_FAILED = "socket.accept() out of system resource"


class AcceptFailures(OneLineRepeats):
    """For asyncio's logger: a listening socket that cannot accept (every descriptor of the
    open files limit in use) once a minute per socket, in one line. asyncio (3.11, CPython
    issue 151615) goes on trying the accept up to its backlog times after the first failure,
    with a traceback each, every time the socket is readable again: 483,000 lines (43 MB) in
    27 s of a burst that used up a limit of 100. Its other messages pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(ACCEPT_FAILED):
            return True
        return super().filter(record)

    def say_held_back(self, *, all_kinds: bool = False) -> None:
        """The failures held back whose minute ran out (`all_kinds`: all, as the server
        stops), each socket's in one line. Only the next failure's line said the count: a
        burst that stopped within its minute left its first line alone, as if one
        connection had failed, its thousands more never said."""
        for key, count, over_s in self.repeats.held_back(all_kinds=all_kinds):
            logging.getLogger("asyncio").error(  # (its text does not start as `key` does)
                "%d more like '%s' in the last %.0f s (not logged one by one)", count, key, over_s
            )
