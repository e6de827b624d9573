"""Ended calls counted in a row: a WARNING once `least` of a kind ended one after another.

One call ending so says nothing (a busy line, a callee who hangs up at once); many in a row,
with none ending otherwise between them, is something broken for every call (a trunk the
carrier refuses, agents whose reports do not reach this server). Each server counts the calls
whose `call.ended` it dispatches.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Coroutine
from typing import Any

from common.calls.events import CALL_ENDED
from common.calls.models import CallEvent
from common.repeats import Repeats

Subscriber = Callable[[CallEvent], Coroutine[Any, Any, None]]

# The ended calls' events each counter remembers, to count one given again once: a take-over
# comes a lease (60 s) or more after the first giving; 10,000 is that many calls ending in
# under 2 minutes at 100 a second (under 1 MB).
SEEN_KEPT = 10_000


class SeenEvents:
    """The events a counter of ended calls counted lately, to count one given again once."""

    def __init__(self, kept: int = SEEN_KEPT) -> None:
        self._kept = kept
        self._seen: set[int] = set()
        self._order: collections.deque[int] = collections.deque()  # oldest out first

    def first(self, event_id: int) -> bool:
        """Whether `event_id` is given for the first time (as far as the last `kept` go)."""
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._kept:
            self._seen.discard(self._order.popleft())
        return True


def warn_of_runs(
    kind: str,
    counts: Callable[[dict[str, Any]], bool | None],
    least: int,
    repeats: Repeats,
    say: Callable[[int, CallEvent, str], None],
) -> Subscriber:
    """A `call.ended` subscriber: `counts(data)` True counts the call, False starts the count
    again, None leaves it as it is (a call that tells nothing either way); once `least` are
    counted in a row, `say(run, event, more)` once a minute (`repeats`, under `kind`). An
    event given again (the dispatcher's take-over of one a subscriber kept failing gives it
    to every subscriber again) is not counted again: one busy call read as two in a row."""
    run = 0
    seen = SeenEvents()

    async def count(event: CallEvent) -> None:
        nonlocal run
        if event.type != CALL_ENDED or not seen.first(event.id):
            return
        if (counted := counts(event.data)) is None:
            return
        run = run + 1 if counted else 0
        if run >= least and (more := repeats.due(kind)) is not None:
            say(run, event, more)

    return count
