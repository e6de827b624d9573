"""Call events: which events a change makes (pure), and the dispatcher of the outbox.

Every status change writes its events to the outbox table in the same transaction as the
change (see common/storage/programs.py). Once that transaction commits, the service hands the
events to this process's `EventDispatcher`, which gives each to every subscriber in order
(logging, customer webhooks, campaigns, the runs' warnings) and then marks them
dispatched. An event a subscriber failed (a campaign's write at a call's end while the
database restarts, say) is given again to that subscriber alone, by this server, RETRY_S
later, RETRY_TRIES times; a failed mark is tried again ACK_RETRY_S later. Events whose server
died before marking them (or that kept failing) are taken over (`recover`) when that server's
lease on them runs out, by any server on the database, and given to every subscriber: on a
timer of the dispatcher's own (`take_over_every`), from the reaper's first pass to its stop;
one taken over MAX_TAKEOVERS times is given up then, kept undispatched. Delivery is
therefore at least once: subscribers must tolerate seeing an event twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from common.background import SlowSteps, kept_running
from common.calls.models import CallEvent, CallRecord
from common.calls.outcomes import FINAL_STATUSES, Status
from common.repeats import Repeats
from common.storage.base import DatabaseError, EventLog

logger = logging.getLogger(__name__)

CALL_DIALING = "call.dialing"
CALL_RINGING = "call.ringing"
CALL_ANSWERED = "call.answered"
CALL_ENDED = "call.ended"
# the agent's final report (transcript, analysis) arrived, or the call ended with no agent to
# report on it (report_status "unavailable", with its call.ended)
CALL_REPORT = "call.report"
EVENT_TYPES = (CALL_DIALING, CALL_RINGING, CALL_ANSWERED, CALL_ENDED, CALL_REPORT)
STATUS_EVENTS = frozenset({CALL_RINGING, CALL_ANSWERED, CALL_ENDED})

RECOVER_BATCH = 500
# Dispatched events are marked so in the database at most this long after their dispatch,
# many in one write (a call's events come milliseconds apart), instead of one write per
# batch. Until then a crash would dispatch them again, as at-least-once delivery allows; the
# lease that keeps other servers off them is far longer. `stop` marks what is left.
ACK_DELAY_S = 0.05
ACK_RETRY_S = 1.0
# A failed event was left to its lease (60 s) before, and then given to every subscriber
# again, and the log blamed a stopped server.
RETRY_S = 2.0
RETRY_TRIES = 10
# A subscriber still on one event after this long is said (a WARNING, with where it waits):
# every event after it waits for it.
SLOW_SUBSCRIBER_S = 60.0
# An undispatched event is taken over (its claim ran out: its server stopped, or one of its
# subscribers kept failing it through those retries) at most this many times; the next time
# it is given up instead (programs.claim_stale_events): kept in the outbox undispatched, never
# claimed again. One a subscriber always failed (a defect its data meets) was given to every
# subscriber again each time its lease ran out, for good. Each take-over comes a lease (60 s)
# or more after the last: ten are 10 minutes or more of failing.
MAX_TAKEOVERS = 10


def events_for_new_call(call: CallRecord) -> tuple[str, ...]:
    return (CALL_DIALING,)


def events_for_change(before: CallRecord, after: CallRecord) -> tuple[str, ...]:
    """The events of one committed change, in the order they happened."""
    types = []
    if after.status is Status.RINGING and before.status is not Status.RINGING:
        types.append(CALL_RINGING)
    if after.answered and not before.answered:
        types.append(CALL_ANSWERED)
    if after.status in FINAL_STATUSES and before.status not in FINAL_STATUSES:
        types.append(CALL_ENDED)
    if after.no_report and not before.no_report:
        types.append(CALL_REPORT)
    return tuple(types)


Subscriber = Callable[[CallEvent], Awaitable[None]]


class EventDispatcher:
    """Hands committed events to subscribers, in order, one batch at a time, and acks them
    (within ACK_DELAY_S, many at once)."""

    def __init__(
        self,
        log: EventLog,
        clock: Callable[[], float],
        lease_s: float = 60.0,
        ack_delay_s: float = ACK_DELAY_S,
        retry_s: float = RETRY_S,
    ) -> None:
        self._log = log
        self._clock = clock
        self._lease_s = lease_s  # how long a claim on events taken over lasts
        self._ack_delay_s = ack_delay_s
        self._subscribers: list[tuple[str, Subscriber]] = []
        self._counters: list[Callable[[CallEvent], None]] = []
        # Each stays on its queue until given: a loop that ends (kept_running starts it again)
        # goes on from the one it was giving, and the take-over renews the claims of all.
        self._queue: collections.deque[CallEvent] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None  # take_over_every's
        self._unacked: list[int] = []  # dispatched, not yet marked so
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_due = False
        self._retry_s = retry_s
        # Failed events by id: the event, its tries, the subscribers that failed it.
        self._failed: dict[int, tuple[CallEvent, int, frozenset[str]]] = {}
        self._due: collections.deque[tuple[CallEvent, int, frozenset[str]]] = collections.deque()
        self._retry_timer: asyncio.TimerHandle | None = None
        self._repeats = Repeats()
        self._slow = SlowSteps("event dispatcher", SLOW_SUBSCRIBER_S)
        self._delivering = ""  # the subscriber an event is given to now

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        self._subscribers.append((name, subscriber))

    def count_new(self, counter: Callable[[CallEvent], None]) -> None:
        """`counter` is told of each event as it is published, once: not of one taken over
        (`recover`), which its writer counted (the metrics' counters: given to every
        subscriber again once a subscriber kept failing it, a call's end was counted twice,
        and with several servers, by a server that took it over)."""
        self._counters.append(counter)

    def publish(self, events: Iterable[CallEvent]) -> None:
        """Queue committed events (call only after their transaction committed)."""
        events = tuple(events)
        for event in events:
            for counter in self._counters:
                counter(event)
        self._enqueue(events)

    def _enqueue(self, events: Iterable[CallEvent]) -> None:
        added = False
        for event in events:
            self._queue.append(event)
            added = True
        if added:
            self._idle.clear()
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                kept_running("event dispatcher", self._run), name="events"
            )

    def take_over_every(self, every_s: float) -> None:
        """`recover` every `every_s` until `stop_taking_over`. The server starts it after the
        reaper's first pass and stops it with the reaper: started with the dispatcher, a
        take-over came before the campaign scheduler subscribed (a slow start-up step), and a
        campaign call's call.ended was marked dispatched unseen by it, its attempt never
        ended; and at the stop, after the scheduler stopped, it held events from the other
        servers a lease while this one stopped dispatching."""
        if self._recovering is None:
            self._recovering = asyncio.get_running_loop().create_task(
                kept_running("event take-over", lambda: self._recover_now_and_then(every_s)),
                name="events-take-over",
            )

    async def stop_taking_over(self) -> None:
        if self._recovering is not None:
            self._recovering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovering
            self._recovering = None

    async def stop(self, timeout: float = 5.0) -> None:
        """Dispatch what is queued (within `timeout`), then stop; the rest is recovered later."""
        await self.stop_taking_over()
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._retry_timer is not None:  # those are taken over once their lease runs out
            self._retry_timer.cancel()
            self._retry_timer = None
        await self._ack(again=False)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until every queued event was dispatched (for tests and benchmarks)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def recover(self, *, restarted: bool = False) -> int:
        """Take over events whose writer's lease ran out (it died) and dispatch them; as the
        server starts (`restarted`), also those it wrote itself before it stopped."""
        events = await self._log.claim_stale_events(
            self._clock(), self._lease_s, RECOVER_BATCH, take_own=restarted, held=self._held()
        )
        if events:
            logger.warning(
                "dispatching %d event(s) whose claim ran out undispatched (their server"
                " stopped, or they kept failing)",
                len(events),
            )
            self._enqueue(events)  # counted by their writer (count_new)
        return len(events)

    def _held(self) -> list[int]:
        """The events this dispatcher still has to give or mark: their claims are renewed as
        it takes over the others (run out behind a slow subscriber, they were taken over by
        this server itself, queued again, and counted towards their giving up)."""
        held = {event.id for event in self._queue}
        held.update(event.id for event, _, _ in self._due)
        held.update(self._unacked)
        # (Not those failed, waiting for their retry: a failing event's take-overs count.)
        return sorted(held)

    async def _recover_now_and_then(self, every_s: float) -> None:
        """`recover` every `every_s`, whatever else the server is doing. It was a duty of the
        reaper's pass, after its settling, which asks LiveKit and the database about a call at
        a time (each up to 10 s): after a server with many calls died, on a loaded machine, the
        dead server's call.ended events (its campaign's attempts end on them) waited minutes
        for the settling of the calls it left, and with LiveKit stalled, as long as it was."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.recover()
            except DatabaseError as exc:  # an outage: said once a minute, with the others
                if (more := self._repeats.due("take-over")) is not None:
                    logger.error("could not take over undispatched events: %s%s", exc, more)
            except Exception as exc:  # a defect: its traceback, once a minute
                if (more := self._repeats.due("take-over defect")) is not None:
                    logger.error(
                        "could not take over undispatched events; trying again in %.0f s%s",
                        every_s,
                        more,
                        exc_info=exc,
                    )

    async def _run(self) -> None:
        while True:
            if not self._queue and not self._due:  # (started again with some: at once)
                await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue or self._due:
                # Those queued by now, then the retries due by now (what comes meanwhile
                # waits for the next round, as it did when each list was taken whole).
                for _ in range(len(self._queue)):
                    await self._dispatch(self._queue[0], 0, None)
                    self._queue.popleft()
                for _ in range(len(self._due)):
                    await self._dispatch(*self._due[0])
                    self._due.popleft()
            if self._ack_due:
                await self._ack()
            elif self._unacked and self._ack_timer is None:
                loop = asyncio.get_running_loop()
                self._ack_timer = loop.call_later(self._ack_delay_s, self._ack_soon)
            if not self._queue and not self._due:
                self._idle.set()

    async def _dispatch(self, event: CallEvent, tries: int, names: frozenset[str] | None) -> None:
        """Give `event` to its subscribers (`names`: only those; None: all); acked once none
        failed, else tried again RETRY_S later by the ones that failed, up to RETRY_TRIES
        tries in all; then left to whoever recovers it once its lease runs out."""
        failed = await self._deliver(event, names)
        if not failed:
            self._unacked.append(event.id)
            if names is None:  # given to all (taken over meanwhile): no retry is owed
                self._failed.pop(event.id, None)
            return
        tries += 1
        if tries >= RETRY_TRIES:
            # Once a minute: a database down for RETRY_TRIES tries (20 s) gave up on every
            # event of a backlog, a line each (its subscribers' failures are said already).
            if (more := self._repeats.due("given up")) is not None:
                logger.error(
                    "event %s (%s) failed %d times; it is dispatched again once its lease"
                    " runs out (given up after %d such take-overs)%s",
                    event.id,
                    event.type,
                    tries,
                    MAX_TAKEOVERS,
                    more,
                )
            return
        self._failed[event.id] = (event, tries, failed)
        if self._retry_timer is None:
            loop = asyncio.get_running_loop()
            self._retry_timer = loop.call_later(self._retry_s, self._retry)

    def _retry(self) -> None:
        self._retry_timer = None
        self._due += sorted(self._failed.values(), key=lambda failed: failed[0].id)
        self._failed.clear()
        self._idle.clear()
        self._wakeup.set()

    def _ack_soon(self) -> None:
        self._ack_timer = None
        self._ack_due = True
        self._wakeup.set()

    async def _ack(self, *, again: bool = True) -> None:
        """Mark the events dispatched so far as dispatched, in one write; if it fails, try
        again ACK_RETRY_S later (`again`; else they are dispatched again after the lease)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._ack_due = False
        delivered, self._unacked = self._unacked, []
        if not delivered:
            return
        try:
            await self._log.ack_events(delivered, self._clock())
        except asyncio.CancelledError:
            # The loop ended as it marked them (the stop, whose last mark makes it; or a
            # stray cancellation, after which it is started again and marks them): dropped,
            # they were never marked and, their lease run out, given to every subscriber again.
            self._unacked = delivered + self._unacked
            self._ack_due = True
            self._wakeup.set()
            raise
        except Exception as exc:
            if (more := self._repeats.due("ack")) is not None:
                logger.error(
                    "could not mark %d event(s) dispatched: %s%s%s",
                    len(delivered),
                    exc,
                    "; trying again" if again else "",
                    more,
                )
            if again:
                self._unacked = delivered + self._unacked
                loop = asyncio.get_running_loop()
                self._ack_timer = loop.call_later(ACK_RETRY_S, self._ack_soon)

    async def _deliver(self, event: CallEvent, names: frozenset[str] | None) -> frozenset[str]:
        """Give `event` to every subscriber (of `names`, if given); the ones that failed."""
        failed: set[str] = set()
        # (timed from the event's first subscriber: "now at" names the one it waits for)
        self._slow.begin(
            lambda: f"event {event.id} ({event.type}), now at subscriber {self._delivering},"
        )
        try:
            for name, subscriber in self._subscribers:
                if names is not None and name not in names:
                    continue
                self._delivering = name
                if not await self._give(event, name, subscriber):
                    failed.add(name)
        finally:
            self._slow.end()
        return frozenset(failed)

    async def _give(self, event: CallEvent, name: str, subscriber: Subscriber) -> bool:
        """Whether `subscriber` took `event` (a failure is said here)."""
        try:
            await subscriber(event)
        except DatabaseError as exc:  # an outage, not a defect: one line a minute
            self._say_database_failed(event, name, exc)
            return False
        except Exception:  # a defect: its traceback once a minute, not every retry
            if (more := self._repeats.due(f"subscriber defect {name}")) is not None:
                logger.exception(
                    "event %s (%s) failed in subscriber %s%s", event.id, event.type, name, more
                )
            return False
        return True

    def _say_database_failed(self, event: CallEvent, name: str, exc: DatabaseError) -> None:
        """A subscriber's write the database failed (restarting, a connection cut): said
        without a traceback, once a minute per subscriber, as every other database failure."""
        if (more := self._repeats.due(f"subscriber {name}")) is not None:
            logger.error(
                "event %s (%s) failed in subscriber %s: %s; it is given again%s",
                event.id,
                event.type,
                name,
                exc,
                more,
            )
