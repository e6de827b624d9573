"""Ended calls counted in a row: a WARNING once `least` of a kind ended one after another.

One call ending so says nothing (a busy line, a callee who hangs up at once); many in a row,
with none ending otherwise between them, is something broken for every call (a trunk the
carrier refuses, agents whose reports do not reach this server). Each server counts the calls
whose `call.ended` it dispatches.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from common.calls.events import CALL_ENDED
from common.calls.models import CallEvent
from common.repeats import Repeats

Subscriber = Callable[[CallEvent], Coroutine[Any, Any, None]]


def warn_of_runs(
    kind: str,
    counts: Callable[[dict[str, Any]], bool | None],
    least: int,
    repeats: Repeats,
    say: Callable[[int, CallEvent, str], None],
) -> Subscriber:
    """A `call.ended` subscriber: `counts(data)` True counts the call, False starts the count
    again, None leaves it as it is (a call that tells nothing either way); once `least` are
    counted in a row, `say(run, event, more)` once a minute (`repeats`, under `kind`)."""
    run = 0

    async def count(event: CallEvent) -> None:
        nonlocal run
        if event.type != CALL_ENDED or (counted := counts(event.data)) is None:
            return
        run = run + 1 if counted else 0
        if run >= least and (more := repeats.due(kind)) is not None:
            say(run, event, more)

    return count
