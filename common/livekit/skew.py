"""How far LiveKit's clock is from this server's, read from its webhooks' signatures.

A webhook event's `createdAt` is LiveKit's clock, in whole seconds. The server dates what the
event says by it (a callee's hang-up, the room's end; a line's answer), since a webhook may
arrive late (retried after an outage). With LiveKit's clock 45 s behind this server's (it
refuses our tokens only past a minute: calls are placed), every hang-up was dated that far
early: a 3 s conversation read `talk_s` 0, its `ended_at` its answer, and its
`participant_left` line came before the call was placed; and every room_finished was taken
for a late one.

Each webhook's token carries when LiveKit signed it (`nbf`, LiveKit's clock, as it sent it),
so its arrival, by this server's clock, minus that is the clocks' distance plus the time the
webhook took (never less). The least of these over the last minutes is the distance itself,
LiveKit's prompt webhooks among them. Retries of webhooks held up by an outage of this server
arrive all together just after it, each with its first signature (that is what makes them
late): they alone are no measure of the clocks, so a distance is taken only from webhooks
that have kept coming for a minute or more (LiveKit gives a webhook up after ~15 s of
retries); until then, and within TOLERANCE_S, the clocks are taken to agree, as they were.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable

from common.clock_steps import ClockSteps

logger = logging.getLogger(__name__)

WINDOW_S = 300.0  # webhooks signed this recently count (a clock stepped since is followed)
SPAN_S = 60.0  # a distance is taken from webhooks that have kept coming this long
TOLERANCE_S = 2.0  # within this (two whole-second times), the clocks are taken to agree
MAX_KEPT = 1024  # arrivals kept at most (the least of each moment only)


def signer_behind(signed_at: float | None, now: float, consistent: int = 0) -> float:
    """How far behind this server's clock a token arriving `now` was signed (negative: ahead),
    for a signer that signs each attempt afresh (our agents: their retries are no later for
    it); 0 within TOLERANCE_S, or with no signing time.

    A token arrives late, never early: one signed ahead is so by at least as much, but one
    signed behind may only have been slow on its way (a loaded server, a slow proxy, a lost
    SYN; a report 3.5 s in transit moved a 1 s ring to 4.5 s). Behind is taken only as far as
    `consistent` (the signer's tokens' `LiveKitClock.behind()`, which needs them to have said
    so for a while) agrees."""
    if signed_at is None or abs(now - signed_at) <= TOLERANCE_S:
        return 0.0
    lag = now - signed_at
    if lag < 0:
        return lag
    return float(min(math.floor(lag), consistent)) if consistent > TOLERANCE_S else 0.0


class LiveKitClock:
    """The distance of LiveKit's clock behind this server's, from its webhooks' signatures."""

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, *, logged: bool = True
    ) -> None:
        self._monotonic = monotonic
        self._logged = logged  # False: the caller says what it makes of the distance
        # (when it came, by the monotonic clock; its arrival minus its signing time): only
        # those that are the least since they came, so the first is the least of the window.
        self._least: collections.deque[tuple[float, float]] = collections.deque()
        self._since: float | None = None  # when webhooks started coming without a pause
        # This server's clock against the monotonic clock, from one webhook to the next: a
        # step forward (NTP, a VM resumed) the kept lags follow at once.
        self._steps = ClockSteps(monotonic)
        self._said = 0  # the distance the log said last (0: none, or they agree)

    def heard(self, signed_at: float | None, now: float) -> None:
        """A verified webhook arrived `now` (this server's clock), signed at `signed_at`."""
        if signed_at is None:
            return
        mono = self._monotonic()
        while self._least and self._least[0][0] < mono - WINDOW_S:
            self._least.popleft()
        if not self._least:
            self._since = mono
        step = self._steps.step(now)
        if step is not None and step > TOLERANCE_S:
            # Stepped forward 10 s (it was 10 s behind), the lags kept from before were 10 s
            # short: the least of them dated every event 10 s early for 5 minutes. Not moved
            # back by a step back: a LiveKit that did not step shows it at once (its lag, now
            # the least), and one on this host that stepped with it (the embedded sandbox) was
            # read 600 s ahead for 5 minutes after a step back of 10, each event dated so.
            self._least = collections.deque((at, kept + step) for at, kept in self._least)
        lag = now - signed_at
        while self._least and self._least[-1][1] >= lag:
            self._least.pop()
        self._least.append((mono, lag))
        if len(self._least) > MAX_KEPT:
            self._least.popleft()
        self._say(self.behind())

    def behind(self) -> int:
        """Whole seconds LiveKit's clock is behind this server's (negative: ahead); 0 while
        that is not known, or within TOLERANCE_S."""
        if not self._least or self._since is None:
            return 0
        if self._monotonic() - self._since < SPAN_S:
            return 0
        lag = self._least[0][1]
        return 0 if abs(lag) <= TOLERANCE_S else math.floor(lag)

    def on_our_clock(self, created_at: float | None) -> float | None:
        """An event's `createdAt` (LiveKit's whole seconds) on this server's clock."""
        return None if created_at is None else created_at + self.behind()

    def _say(self, behind: int) -> None:
        if not self._logged or abs(behind - self._said) <= TOLERANCE_S:
            return
        if behind == 0:
            logger.info("LiveKit's clock agrees with this server's again (by its webhooks)")
        else:
            logger.warning(
                "LiveKit's clock is %d s %s this server's (by when it signed its webhooks): its"
                " events are dated on this server's clock; keep both clocks in sync (NTP)",
                abs(behind),
                "behind" if behind > 0 else "ahead of",
            )
        self._said = behind


# The agent hosts told apart at most (each a LiveKitClock of at most MAX_KEPT arrivals); past
# it, the one heard from least recently is forgotten.
MAX_SIGNERS = 256


class SignerClocks:
    """A LiveKitClock for each signer of the tokens (`SignedToken.signer`: an agent's host,
    None for one that names none). One clock for all, with one agent host minutes behind and
    another in time, took the least of them all (the one in time): the host behind was never
    allowed for, its answers dated minutes early (ring_s 0), and nothing said so."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._clocks: collections.OrderedDict[str | None, LiveKitClock] = collections.OrderedDict()

    def of(self, signer: str | None) -> LiveKitClock:
        """`signer`'s clock (made at its first token)."""
        clock = self._clocks.get(signer)
        if clock is None:
            clock = self._clocks[signer] = LiveKitClock(self._monotonic, logged=False)
            while len(self._clocks) > MAX_SIGNERS:
                self._clocks.popitem(last=False)
        else:
            self._clocks.move_to_end(signer)
        return clock
