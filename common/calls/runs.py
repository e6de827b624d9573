"""Ended calls counted in a row: a WARNING once `least` of a kind ended one after another.

One call ending so says nothing (a busy line, a callee who hangs up at once); many in a row,
with none ending otherwise between them, is something broken for every call (a trunk the
carrier refuses, agents whose reports do not reach this server). Each server counts the calls
whose `call.ended` it dispatches.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Coroutine, Hashable, Iterable
from typing import Any, Generic, TypeVar

from common.calls.events import CALL_ENDED
from common.calls.models import CallEvent
from common.repeats import Repeats

Subscriber = Callable[[CallEvent], Coroutine[Any, Any, None]]

# How many keys a Recent remembers: the ended calls' events each counter counted (a take-over
# gives one again a lease, 60 s, or more after the first giving), the calls whose reports
# were refused (far more than end within an outage and an agent's retries after it). 10,000
# is that many calls ending in under 2 minutes at 100 a second (under 1 MB).
RECENT_KEPT = 10_000

K = TypeVar("K", bound=Hashable)


class Recent(Generic[K]):
    """The keys noted lately: the last `kept` of them, the oldest forgotten first."""

    def __init__(self, kept: int = RECENT_KEPT) -> None:
        self._kept = kept
        self._keys: collections.OrderedDict[K, None] = collections.OrderedDict()

    def note(self, keys: Iterable[K]) -> None:
        """`keys` noted now (one noted before is the newest again)."""
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self._kept:
            self._keys.popitem(last=False)

    def first(self, key: K) -> bool:
        """Whether `key` is noted for the first time (as far as the last `kept` go), noting
        it: an event a counter counted, given again, is not counted again."""
        if key in self._keys:
            return False
        self.note((key,))
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys


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
    seen = Recent[int]()

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
