"""Steps of this server's wall clock (NTP setting it right, a VM resumed), seen against the
monotonic clock: a time dated before a step is off by the step after it. The campaign
scheduler, the webhook sender and the LiveKit clock estimate each watch for them."""

from __future__ import annotations

import time
from collections.abc import Callable


class ClockSteps:
    """The wall clock's lead over the monotonic clock, from one look to the next."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lead: float | None = None  # None before the first look

    def step(self, now: float) -> float | None:
        """How far the wall clock moved (at `now`) since the last look, beyond the monotonic
        time between them (negative: it stepped back); None at the first look. What counts as
        a step (past NTP's slewing) is the caller's tolerance."""
        lead = now - self._monotonic()
        last, self._lead = self._lead, lead
        return None if last is None else lead - last
