"""Customer webhooks: the deliveries the outbox wrote, signed, sent, retried for a day.

Every call event bound for a customer URL has a delivery row, written in the same transaction
as the event (common/storage/programs.py), so nothing is lost by a crash at any moment. This
sender claims due deliveries from the database (a lease, so several servers never send one
twice while each is alive, and a dead server's claims expire), signs each with the Standard
Webhooks scheme (common/notify/signing.py: `webhook-id` is the same on every retry), POSTs it
through the SSRF guard (common/notify/guard.py: public addresses only, checked at connect
time; no redirects; the answer read up to a small cap), and records the attempt:

- 2xx: delivered.  410 Gone: stopped, and so are this call's later events to that URL.
- 413: failed at once (the same bytes never fit the receiver's limit; a redeliver, once the
  limit is raised, sends it again), and the call's later events go.
- anything else (other status, timeout after 15 s, connection error, refused address):
  retried on the ladder (CALLS_WEBHOOK_RETRY_SCHEDULE; a 429 or 503 no sooner than its
  Retry-After asks, within the longest step), then failed. A send that went out on a
  kept-alive connection its receiver closed as it was sent is sent again at once on a new
  one, as one attempt (`stale_connection`).

Of one call and one URL only the earliest pending delivery is ever sent (the claim says so),
so events arrive in order and a later one waits while an earlier one is retrying; the send
that records the earlier one claims the next in the same transaction and starts it, so nothing
polls for it meanwhile. Each
receiver (scheme, host, port) gets at most PER_RECEIVER_CONCURRENCY requests at once and all of
them MAX_CONCURRENCY, so one slow or dead receiver never delays the others. Receivers that have
not answered promptly lately, and requests waiting long for their answer, share at most
UNPROVEN_CONCURRENCY of them, so many slow receivers (one per host name costs an attacker
nothing) cannot take every slot from the ones that answer (`_may_start`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import aiohttp
from yarl import URL

from common.background import kept_running
from common.calls.models import (
    RECEIVER_SAID,
    DeliveryOutcome,
    RecordedDelivery,
    WebhookDelivery,
)
from common.clock_steps import ClockSteps
from common.descriptors import OUT_OF_DESCRIPTORS, out_of_descriptors
from common.metrics import Metrics
from common.notify.guard import LookupsBusy, guard_refusal, make_connector, read_capped
from common.notify.signing import sign
from common.repeats import Repeats
from common.retry_after import seconds_asked
from common.settings import MAX_RETRY_DELAY_S, Settings
from common.storage.base import CallStore, DatabaseError
from common.text import shown_text
from common.times import iso_time
from common.waiting import wait_set

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 15.0
BODY_READ_S = 2.0  # for the first bytes of a receiver's body, once its status is in
# Pauses before asking the database again to record an attempt's outcome (`_record`).
RECORD_RETRY_S = (0.25, 0.5, 1.0, 2.0, 4.0)
MAX_CONCURRENCY = 50
PER_RECEIVER_CONCURRENCY = 4
# Receivers whose last send was not answered (any status) within PROMPT_S, or that have not
# been sent to in PROVEN_FOR_S, share at most this many of MAX_CONCURRENCY; the rest is kept
# for receivers that answer. 60 receivers that never answered, one per host, held all 50 and
# a healthy one's event waited 14 s.
UNPROVEN_CONCURRENCY = 40
PROMPT_S = 5.0
PROVEN_FOR_S = 3600.0
MAX_PROVEN_KEPT = 10_000  # receivers remembered as prompt (older ones are forgotten first)
MAX_FAILURES_SAID = 10_000  # receivers whose recovery is owed to the log, at most
IDLE_WAKE_S = 30.0  # with nothing due, look again this often (and whenever woken)
# The database did not say what is due next (an outage): look again this soon. Waiting
# IDLE_WAKE_S, a delivery due meanwhile (a retry, a redeliver, a dead server's claim run
# out) went 30 s after a one-second PostgreSQL restart was over.
DATABASE_RETRY_S = 1.0
# A receiver at its concurrency cap: this many more of its deliveries wait in memory (claimed)
# and start the moment one of its sends ends; beyond them, deliveries are given back for a
# moment, so that one slow receiver never holds the claims the others need.
PER_RECEIVER_WAITING = 8
HOST_BUSY_DEFER_S = 0.2
# A send this server had no file descriptor for (every one in use): given back unattempted,
# due again this much later.
NO_DESCRIPTOR_DEFER_S = 2.0
DEFECT_WAIT_S = 1.0  # after a pass failed on a defect (logged), before the next
# How often deliveries marked behind one that is over are looked for (`free_behind`): a
# server of an earlier release beside this one's leaves them so.
FREE_BEHIND_EVERY_S = 300.0
UNCLAIMABLE_WAIT_S = 0.05  # due but not claimable (ordering, or another server holds it)
USER_AGENT = "outbound-caller-webhooks/1"
# The wall clock's lead over the monotonic clock may drift this much (NTP slewing) before a
# drop is taken for the clock stepping back.
STEP_BACK_TOLERANCE_S = 1.0
# How much of a refusing receiver's answer its delivery's `last_error` quotes (what it said
# was wrong); the log quotes none of it: a receiver may echo the event it refused.
SAID_CHARS = 160


class _NoDescriptor(Exception):
    """No connection could be opened for a send: this server is out of file descriptors."""


class _StaleConnection(Exception):
    """A send went out on a kept-alive connection its receiver had closed (stale_connection)."""


def _origin(url: str) -> str:
    """Who receives: scheme, host and port (the unit of the per-receiver limit). A URL that
    does not parse (hand-edited, or kept from a release that let it through: a port out of
    range) is a receiver of its own: its send fails as one to a receiver that cannot be
    reached does, an attempt on the retry ladder, said as such. Raised here, it stopped the
    start of the claimed batch at it: the deliveries after it were never sent, claimed again
    with it each time their claims ran out."""
    try:
        parsed = URL(url)
        return f"{parsed.scheme}://{parsed.host_subcomponent}:{parsed.port}"  # [::1] bracketed
    except ValueError:  # its scheme and authority as written, without any credentials
        scheme, _, rest = url.partition("://")
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].rsplit("@", 1)[-1]
        return shown_text(f"{scheme}://{authority}", 200)


def webhook_body(delivery: WebhookDelivery) -> bytes:
    """The exact bytes sent (and signed): the same on every attempt of one delivery."""
    doc = {
        "type": delivery.event_type,
        "timestamp": iso_time(delivery.event_created_at),
        "data": delivery.event_data,
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def next_outcome(
    delivery: WebhookDelivery,
    status: int | None,
    error: str | None,
    schedule: tuple[float, ...],
    now: float,
    asked_wait_s: float | None = None,
) -> DeliveryOutcome:
    """What one attempt comes to (pure): delivered, stopped (410), a retry, or failed. A
    retry waits its step of the schedule, or longer if the receiver asked so (`Retry-After`
    on a 429 or 503), up to the schedule's longest step."""
    if status is not None and 200 <= status < 300:
        return DeliveryOutcome("delivered", status)
    if status == 410:
        return DeliveryOutcome("stopped", status, "410 Gone: no more events of this call")
    if status == 413:
        # The same bytes never fit: retried for 31 h, it held every later event of its call
        # to that URL as long (`call.ended` a day late), then failed all the same.
        return DeliveryOutcome("failed", status, error, round_start=delivery.round_start)
    attempt = delivery.attempts - delivery.round_start + 1  # this one, counted (this round)
    first_retry_at = now + schedule[1] if len(schedule) > 1 else None
    if attempt < len(schedule):
        retry_at = now + max(schedule[attempt], min(asked_wait_s or 0.0, max(schedule)))
        return DeliveryOutcome(
            "pending", status, error, retry_at, delivery.round_start, first_retry_at
        )
    return DeliveryOutcome(
        "failed", status, error, round_start=delivery.round_start, first_retry_at=first_retry_at
    )


def _quoted_answer(answer: bytes) -> str:
    """The start of a refusing receiver's answer, quoted on one line ('' if it is blank):
    its own words on what it found wrong (a field it wants, its body limit). A delivery's
    `last_error` said only `HTTP 400`, and its owner had to reproduce the request to learn
    why."""
    text = " ".join(answer[: SAID_CHARS * 4].decode("utf-8", "replace").split())
    return json.dumps(shown_text(text, SAID_CHARS), ensure_ascii=False) if text else ""


def asked_wait(status: int, retry_after: str | None, now: float) -> float | None:
    """The seconds a receiver answering 429 or 503 asked us to wait (pure): its
    `Retry-After`, seconds or an HTTP date, read up to the longest step a schedule may have
    (hundreds of digits were "inf" in the delivery's last_error); None if it asked nothing we
    can read."""
    if status not in (429, 503) or not retry_after:
        return None
    seconds = seconds_asked(retry_after, now)
    return None if seconds is None else min(seconds, MAX_RETRY_DELAY_S)


def connection_failure(exc: aiohttp.ClientError) -> str:
    """What a send that got no HTTP answer ran into, as a delivery's `last_error` (the
    customer's to read) and the log say it: in words its receiver's owner can act on, where
    "connection failed (ClientConnectorCertificateError)" said only a class name (and a
    receiver answering something that is not HTTP read as a connection that failed). Never
    the receiver's own bytes, nor the address connected to."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        error = exc.certificate_error
        why = getattr(error, "verify_message", None) or getattr(error, "reason", None)
        return (
            f"connection failed: TLS certificate not accepted ({shown_text(str(why), 120)}):"
            " it must be valid for the URL's host name and issued by a public authority"
            if why
            else "connection failed: TLS certificate not accepted"
        )
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        if isinstance(exc.os_error, LookupsBusy):  # not asked: it may well resolve now
            return (
                "connection failed: the URL's host name was slow to resolve lately and was not"
                " looked up this time (is its name server answering promptly?)"
            )
        return "connection failed: the URL's host name did not resolve (DNS)"
    if isinstance(exc, aiohttp.ClientSSLError):
        # The handshake's own reason ("wrong version number": a port without TLS), if any.
        reason = getattr(getattr(exc, "os_error", None), "reason", None)
        said = f" ({shown_text(str(reason).lower().replace('_', ' '), 80)})" if reason else ""
        return f"connection failed: TLS handshake failed{said}: does the URL's port serve https?"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection failed: refused or unreachable (is the receiver up, on that port?)"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "no answer: the receiver closed the connection without one"
    if isinstance(exc, aiohttp.ClientResponseError):  # the parser's: no HTTP status and headers
        return "the answer is not HTTP, or has a status line or header over 8 KiB"
    if isinstance(exc, aiohttp.InvalidURL):  # (a stored URL hand-edited, see _origin)
        return "no request made: the URL does not parse (its host, or its port)"
    if isinstance(exc, aiohttp.ClientOSError) and exc.strerror:
        return f"the connection was lost ({shown_text(exc.strerror, 80)})"
    return f"connection failed ({type(exc).__name__})"


# Whether the send under way in this task went out on a kept-alive connection (set by the
# session's trace as the connection is taken from its pool).
_REUSED: ContextVar[list[bool] | None] = ContextVar("webhook_connection_reused", default=None)


async def _reused(
    _session: aiohttp.ClientSession,
    _context: object,
    _params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    if (reused := _REUSED.get()) is not None:
        reused[0] = True


def _trace() -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_reused)
    return trace


def stale_connection(exc: BaseException, reused: bool) -> bool:
    """Whether a send failed because the kept-alive connection it went out on had been
    closed by its receiver as it was sent (closed or reset before any answer): a receiver
    closes an idle connection after a few seconds of its own (Node's 5, gunicorn's 2), and
    the send that takes it from the pool just then is lost. A new connection says nothing
    of the receiver yet; one that refused to connect was never kept alive."""
    return (
        reused
        and isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
        and not isinstance(exc, aiohttp.ClientConnectorError)
    )


def give_back_until(moved_at: float, now: float) -> float:
    """When deliveries that found their receiver's slots (or all slots) taken are claimed
    again (pure), given when its sends last made progress (one ended, or the first started):
    at the first of HOST_BUSY_DEFER_S, twice that, four times that, ... after `moved_at` that
    is HOST_BUSY_DEFER_S from now or later, and within REQUEST_TIMEOUT_S.

    A receiver answering, however busy, has them back in HOST_BUSY_DEFER_S. One whose sends
    do not end (it hangs: each waits its 15 s) has them back ever more slowly (every 0.2 s, a
    claim and a give-back of its whole backlog kept an idle server 12% busy), and all at once
    (the times are the same for each), so a backlog is claimed again in one pass, not one by
    one. Counting the give-backs in a row instead, a busy receiver answering in milliseconds
    had events held 15 s: a burst's records and claims gave back several between two of its
    answers."""
    step = HOST_BUSY_DEFER_S
    while moved_at + step < now + HOST_BUSY_DEFER_S:
        step *= 2
    return min(moved_at + step, now + REQUEST_TIMEOUT_S)


def _prompt_reserve() -> int:
    """The slots kept for receivers that answer promptly."""
    return MAX_CONCURRENCY - UNPROVEN_CONCURRENCY


def _connections() -> int:
    """Sends in flight at most: MAX_CONCURRENCY, and the prompt reserve beyond it."""
    return MAX_CONCURRENCY + _prompt_reserve()


@dataclass(frozen=True)
class _Send:
    call_id: str
    receiver: str
    started: float  # monotonic
    prompt: bool  # its receiver had answered promptly lately when it started


@dataclass
class _Flight:
    prompt: int = 0
    suspect: int = 0
    slow: set[str] = field(default_factory=set)  # receivers with a send waiting past PROMPT_S

    def count(self, prompt: bool) -> None:
        if prompt:
            self.prompt += 1
        else:
            self.suspect += 1


class WebhookSender:
    def __init__(
        self,
        store: CallStore,
        settings: Settings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.calls_webhook_secret is None:
            raise ValueError("customer webhooks need CALLS_WEBHOOK_SECRET")
        self._store = store
        self._secret = settings.calls_webhook_secret
        self._schedule = settings.calls_webhook_retry_schedule
        # A claim outlives one request (15 s) with room to record its outcome.
        self._lease_s = max(settings.claim_lease_s, REQUEST_TIMEOUT_S + 5)
        self._allow_private = settings.calls_webhook_allow_private
        self._metrics = metrics
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._waiting: defaultdict[str, deque[WebhookDelivery]] = defaultdict(deque)
        self._stopping = False
        self._sending: set[asyncio.Task[None]] = set()
        self._repeats = Repeats()  # a receiver or the database down fails every attempt
        # Receivers whose failure the log said, and not yet that they took a delivery again
        # (said once a minute at most: a receiver that fails now and then would flap).
        self._failure_said: set[str] = set()
        self._recovery = Repeats()
        self._per_receiver: defaultdict[str, int] = defaultdict(int)
        self._prompt: dict[str, float] = {}  # receiver -> when it last answered within PROMPT_S
        self._in_flight: dict[int, _Send] = {}  # by delivery id
        # When the claim of each delivery started or waiting here runs out (this clock's time)
        self._lease_until: dict[int, float] = {}
        # When each receiver with sends in flight last made progress (this clock's time): one
        # of its sends ended, or its first one started ("": any receiver's, for no slot free
        # at all). Its deliveries are given back for about as long as since then (`_dispatch`).
        self._progress: dict[str, float] = {}
        # When the run loop looks again unless woken; inf while it is looking (what it reads
        # may predate the news: any news wakes it again once it has looked).
        self._wake_at = math.inf
        # Its last look found no free slot: a send that ends must wake it.
        self._starved = False
        # The clock against the monotonic clock, from one look to the next (`_after_step_back`).
        self._steps = ClockSteps()
        self._free_behind_at = 0.0  # monotonic: when `_free_behind` looks next

    def wake(self, call_id: str | None = None) -> None:
        """New deliveries (of `call_id`) were committed, or one became due: look now. Not for
        a call with a delivery held here (in flight, or waiting for its receiver's slot): its
        new one waits behind it, and the send that records it takes the new one then (its
        record is sent to the database after this commit, so it sees it)."""
        if call_id is None or not self._holds(call_id):
            self._wakeup.set()

    def _holds(self, call_id: str) -> bool:
        """A delivery of `call_id` is claimed here and not yet recorded: in flight, or
        waiting for its receiver's slot (a send leaves both before it is recorded)."""
        return any(send.call_id == call_id for send in self._in_flight.values()) or any(
            waiting.call_id == call_id for queue in self._waiting.values() for waiting in queue
        )

    async def start(self) -> None:
        # After a restart, what this server held when it stopped is sent again at once.
        released = await self._store.release_claims()
        if released:
            logger.info("taking back %d webhook delivery(ies) held before a restart", released)
        connector = make_connector(
            allow_private=self._allow_private,
            limit=_connections(),  # see _may_start
            limit_per_host=PER_RECEIVER_CONCURRENCY,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            trust_env=False,  # a proxy would be checked instead of the receiver
            # No cookies: a receiver's Set-Cookie was kept (for good, however many) and sent
            # to every receiver on its host name or under its Domain, other customers' too.
            cookie_jar=aiohttp.DummyCookieJar(),
            trace_configs=[_trace()],
        )
        self._task = asyncio.get_running_loop().create_task(
            kept_running("webhook sender", self._run), name="webhooks"
        )

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; let sends in flight finish briefly; give back what is left
        (unfinished sends, those waiting for a slot): the other servers send them now, or
        this one when it starts again."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
        if self._sending:  # the stop waited for them, and nothing said why
            receivers = sorted({send.receiver for send in self._in_flight.values()})
            logger.info(
                "stopping with %d customer webhook(s) still unanswered after %g s (%s): sent"
                " again at the next start, or by another server",
                len(self._sending),
                timeout,
                ", ".join(receivers[:3]) + (", ..." if len(receivers) > 3 else ""),
            )
        for task in set(self._sending):
            task.cancel()
        if self._sending:  # ended before their claims are given back: none is recorded after
            await asyncio.wait(set(self._sending), timeout=timeout)
        await self._give_back()
        if self._session is not None:
            await self._session.close()

    async def _give_back(self) -> None:
        """What this server holds, claimable by the others at once. Left to its lease
        (CLAIM_LEASE_S, a minute), none of it, nor its calls' later events behind it, went
        anywhere for that long after a rolling deploy stopped a server: its claims went back
        only to a server started again under its name, and a new pod has a new one."""
        try:
            given = await self._store.release_claims()
        except DatabaseError as exc:
            logger.warning(
                "could not give back the customer webhooks this server held (%s): other"
                " servers send them once its claims run out",
                exc,
            )
            return
        if given:
            logger.info(
                "gave back %d customer webhook delivery(ies) it held: sent by another server,"
                " or at the next start",
                given,
            )

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Until no delivery is pending: all delivered, failed or stopped (tests, benchmarks)."""
        async with asyncio.timeout(timeout):
            while (
                self._sending
                or any(self._waiting.values())
                or await self._store.next_delivery_at() is not None
            ):
                await asyncio.sleep(0.01)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            await self._free_behind()
            try:
                more_due = await self._claim()
            except DatabaseError as exc:
                if (more := self._repeats.due("claim")) is not None:
                    logger.error("could not claim webhook deliveries: %s%s", exc, more)
                more_due = False
            except Exception:  # a defect: said with its traceback; the sender goes on
                self._defect()
                more_due = False
            if not more_due:
                try:
                    await self._sleep_until_due()
                except Exception:
                    self._defect()
                    await asyncio.sleep(DEFECT_WAIT_S)

    async def _free_behind(self) -> None:
        """Every FREE_BEHIND_EVERY_S (at the start too), the deliveries marked behind an
        earlier one that is over, claimable again: else they and their call's later events
        waited for good."""
        if time.monotonic() < self._free_behind_at:
            return
        self._free_behind_at = time.monotonic() + FREE_BEHIND_EVERY_S
        try:
            freed = await self._store.free_behind()
        except DatabaseError:  # looked for again next time
            return
        except Exception:  # a defect: said with its traceback; the sender goes on
            self._defect()
            return
        if freed:
            logger.info(
                "%d customer webhook delivery(ies) waited behind one that was over (a server of"
                " an earlier release recorded it): sent now",
                freed,
            )

    def _defect(self) -> None:
        if (more := self._repeats.due("sender defect")) is not None:
            logger.exception("webhook sender pass failed; trying again%s", more)

    async def _claim(self) -> bool:
        """Claim what is due, as much as there are free slots for, and start it. True: the
        claim got all it asked for, so more may be due."""
        held = sum(len(queue) for queue in self._waiting.values())
        flight = self._flight()
        free = max(MAX_CONCURRENCY - len(self._sending) - held, _prompt_reserve() - flight.prompt)
        self._starved = free <= 0
        if self._starved:
            return False
        now = self._clock()
        await self._after_step_back(now)
        due = await self._store.claim_due_deliveries(now, self._lease_s, free)
        await self._dispatch(due, flight, now)
        return len(due) == free

    async def _dispatch(self, claimed: list[WebhookDelivery], flight: _Flight, now: float) -> None:
        """Start each claimed delivery, or queue it behind its receiver's sends; give back
        those that may not start now (`give_back_until`)."""
        busy: defaultdict[str, list[int]] = defaultdict(list)  # by receiver
        for delivery in claimed:
            if delivery.id in self._in_flight:  # claimed again while its send runs: that one
                continue  # records it (and frees its claim)
            held = delivery.id in self._lease_until  # waiting here for a slot
            self._lease_until[delivery.id] = now + self._lease_s
            if held:  # claimed again after its lease ran out: the copy waiting goes on
                continue
            receiver = _origin(delivery.url)
            if self._per_receiver.get(receiver, 0) < PER_RECEIVER_CONCURRENCY:
                prompt = self._prompt_now(receiver, flight)
                if self._may_start(prompt, flight):
                    self._start(delivery, receiver, prompt)
                    flight.count(prompt)
                else:
                    busy[""].append(delivery.id)  # no slot at all: not its receiver's doing
            elif len(self._waiting[receiver]) < PER_RECEIVER_WAITING:
                self._waiting[receiver].append(delivery)  # starts as a slot of it frees
            else:
                busy[receiver].append(delivery.id)
        # Not an attempt: they wait a moment, and the claims move on to others.
        for receiver, given_back in busy.items():
            if receiver and (more := self._repeats.due(f"behind {receiver}")) is not None:
                # Else only the pending gauge showed a backlog growing (probe AQ: 19 -> 619
                # in two minutes behind a receiver whose sends took their 15 s now and then).
                logger.warning(
                    "customer webhooks to %s are falling behind: its %d sends at once are all"
                    " taken and %d more wait (a backlog after an outage, or a receiver slow to"
                    " answer); see customer_webhook_deliveries_pending%s",
                    receiver,
                    PER_RECEIVER_CONCURRENCY,
                    len(self._waiting[receiver]) + len(given_back),
                    more,
                )
            for delivery_id in given_back:
                del self._lease_until[delivery_id]
            # (its slots are all taken: it has sends, and so a time it moved)
            until = give_back_until(self._progress.get(receiver, now), now)
            await self._store.defer_deliveries(given_back, until)
            self._look_by(until)

    def _flight(self) -> _Flight:
        """The sends in flight now: a send is suspect if its receiver was not proven when it
        started, or once it has waited PROMPT_S for its answer (its receiver with it)."""
        now = time.monotonic()
        flight = _Flight()
        for send in self._in_flight.values():
            aged = now - send.started >= PROMPT_S
            if aged:
                flight.slow.add(send.receiver)
            flight.count(send.prompt and not aged)
        return flight

    @staticmethod
    def _may_start(prompt: bool, flight: _Flight) -> bool:
        """Suspect sends share UNPROVEN_CONCURRENCY of MAX_CONCURRENCY. Prompt receivers
        always have the rest: beyond MAX_CONCURRENCY if need be (sends started prompt that
        then hang become suspect, and must not take the reserve with them)."""
        in_flight = flight.prompt + flight.suspect
        if prompt:  # never past the connector's limit: a send would wait there, unseen
            reserved = flight.prompt < _prompt_reserve()
            return in_flight < MAX_CONCURRENCY or reserved and in_flight < _connections()
        return flight.suspect < UNPROVEN_CONCURRENCY and in_flight < MAX_CONCURRENCY

    def _prompt_now(self, receiver: str, flight: _Flight) -> bool:
        """A send to `receiver` starts as a prompt one: it answered promptly lately, and no
        send to it is waiting past PROMPT_S now."""
        return self._proven(receiver) and receiver not in flight.slow

    def _proven(self, receiver: str) -> bool:
        """The receiver answered within PROMPT_S in the last PROVEN_FOR_S."""
        at = self._prompt.get(receiver)
        return at is not None and time.monotonic() - at < PROVEN_FOR_S

    def _answered(self, receiver: str, status: int | None, took_s: float) -> None:
        """A send to `receiver` ended after `took_s`: answered with `status`, or not at all.
        Slow (PROMPT_S or more, answered or not), the receiver shares the unproven slots
        until it answers promptly again; a connection refused at once says nothing of how
        promptly it answers, and changes nothing."""
        if status is None and took_s < PROMPT_S:
            return
        self._prompt.pop(receiver, None)  # re-inserted last: the dict is oldest first
        if status is None or took_s >= PROMPT_S:
            return
        self._prompt[receiver] = time.monotonic()
        while len(self._prompt) > MAX_PROVEN_KEPT:
            del self._prompt[next(iter(self._prompt))]

    def _start(
        self, delivery: WebhookDelivery, receiver: str, prompt: bool, *, waited: bool = False
    ) -> None:
        if not self._in_flight:
            self._progress[""] = self._clock()
        if not self._per_receiver[receiver]:
            self._progress[receiver] = self._clock()
        self._per_receiver[receiver] += 1
        self._in_flight[delivery.id] = _Send(delivery.call_id, receiver, time.monotonic(), prompt)
        task = asyncio.get_running_loop().create_task(self._send(delivery, receiver, waited))
        self._sending.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A defect in a send (its record raising the unexpected): said with its
            # traceback once a minute. Unread, it was said at all only as asyncio's "Task
            # exception was never retrieved", once the task was collected, if ever; the
            # delivery is sent again once its claim runs out.
            if (more := self._repeats.due("send defect")) is not None:
                logger.error(
                    "a customer webhook send failed; it is sent again once its claim runs out%s",
                    more,
                    exc_info=exc,
                )
        if self._starved:  # a slot freed (the call's next event was taken by the record)
            self._wakeup.set()

    async def _after_step_back(self, now: float) -> None:
        """The clock stepped back since the last look (NTP, a VM's clock set right): the
        retries dated before it (and this server's claims) wait the step less. Dated by the
        clock before the step, a retry due in 5 s went an hour later after a step back of an
        hour, and its call's later events waited behind it. (With several servers, those
        another server dated are pulled back too, at worst tried early once.)"""
        moved = self._steps.step(now)
        if moved is None or moved >= -STEP_BACK_TOLERANCE_S:
            return
        step = -moved
        self._lease_until = {key: at - step for key, at in self._lease_until.items()}
        self._progress = {key: at - step for key, at in self._progress.items()}
        try:
            pulled = await self._store.pull_back_deliveries(now, step)
        except DatabaseError as exc:  # at worst they wait the step: said, not fatal
            logger.error(
                "this server's clock stepped back %.0f s; the customer webhooks due after it"
                " could not be pulled back (%s): they wait that much longer",
                step,
                exc,
            )
            return
        logger.warning(
            "this server's clock stepped back %.0f s: %d customer webhook delivery(ies) due"
            " after it wait that much less, as their waits were counted by the clock before",
            step,
            pulled,
        )

    def _look_by(self, at: float) -> None:
        """Something becomes claimable at `at`: make sure the run loop looks by then."""
        if at < self._wake_at:
            self._wakeup.set()

    async def _sleep_until_due(self) -> None:
        """Until the next claimable delivery comes due or a claim held runs out (a dead
        server's deliveries are taken over then), or a new event comes (`wake`), or a
        send's record says its call's next one comes due sooner (`_look_by`), or a slot frees
        after a look that found none. A later event of a call whose earlier one is in flight
        is not claimable: the send that records the earlier one takes it. One said due now
        and still not claimed (another server took it): look again shortly, never a busy
        loop. With no slot free, what is due waits for one (`_until_a_slot_may_free`):
        asking the database when it comes due said "now" and looked again every
        UNCLAIMABLE_WAIT_S, 20 looks a second for as long as a backlog kept every slot busy."""
        wait = IDLE_WAKE_S
        now = self._clock()
        try:
            due = None if self._starved else await self._store.next_delivery_at(unclaimed_at=now)
        except DatabaseError:  # unknown: what came due meanwhile is claimed once it is back
            wait = DATABASE_RETRY_S
        else:
            if due is not None:
                wait = min(max(due - now, UNCLAIMABLE_WAIT_S), IDLE_WAKE_S)
            elif self._starved:
                wait = self._until_a_slot_may_free()
        self._wake_at = now + wait
        try:
            await wait_set(self._wakeup, wait)
        finally:
            self._wake_at = math.inf

    def _until_a_slot_may_free(self) -> float:
        """With no slot free, the seconds until one may free with no send ending (a send that
        ends wakes the run loop: `_sent`): the oldest send still counted prompt turns suspect
        PROMPT_S after it started, and leaves its share of the prompt reserve (`_flight`)."""
        now = time.monotonic()
        turns = [
            send.started + PROMPT_S - now
            for send in self._in_flight.values()
            if send.prompt and now - send.started < PROMPT_S
        ]
        return min(max(min(turns, default=IDLE_WAKE_S), UNCLAIMABLE_WAIT_S), IDLE_WAKE_S)

    async def _send(self, delivery: WebhookDelivery, receiver: str, waited: bool = False) -> None:
        if not await self._still_held(delivery):
            # Its claim ran out before the send could end (this server was stalled, or the
            # delivery waited long behind its receiver's sends) and another server claimed it
            # since: a stalled server sent an event another had delivered, after that call's
            # later ones. Not sent here.
            self._free_slot(delivery, receiver, ended=False)
            logger.info(
                "webhook %s (%s): another server claimed it while it waited here; not sent",
                delivery.webhook_id,
                delivery.event_type,
                extra={"call_id": delivery.call_id},
            )
            return
        if waited:
            # It waited here for its receiver's slot with its event as read when it was
            # claimed: a call erased on request meanwhile (POST /calls/erase answered 200)
            # went out with its name and conversation. Its event as it is now.
            fresh = await self._read_again(delivery)
            if fresh is None:  # not sent now: claimed again once its claim runs out
                self._free_slot(delivery, receiver, ended=False)
                return
            delivery = replace(delivery, event_data=fresh.event_data)
        started = time.monotonic()
        status: int | None = None
        try:
            status, error, asked_wait_s, said = await self._post(delivery)
        except _NoDescriptor:
            no_descriptor = True
        else:
            no_descriptor = False
        finally:
            # How promptly it answered counts before its slot goes to the next one waiting:
            # a send that timed out must not hand its receiver's next one a prompt slot.
            self._answered(receiver, status, time.monotonic() - started)
            self._free_slot(delivery, receiver)
        if no_descriptor:
            await self._give_back_unattempted(delivery)
            return
        now = self._clock()
        await self._after_step_back(now)  # before a retry is dated by the clock after it
        outcome = next_outcome(delivery, status, error, self._schedule, now, asked_wait_s)
        self._count(delivery, outcome, receiver, now)
        if said:  # for the customer to read, not the log
            outcome = replace(outcome, error=f"{outcome.error}{RECEIVER_SAID}{said[1:]}")
        recorded = await self._record(delivery, outcome)
        if recorded is None:
            return
        if recorded.taken is not None and not self._stopping:  # (stopping: given back at start)
            await self._dispatch([recorded.taken], self._flight(), self._clock())
        elif recorded.next_at is not None:
            self._look_by(recorded.next_at)

    async def _give_back_unattempted(self, delivery: WebhookDelivery) -> None:
        """A send that could not open a connection, this server being out of file
        descriptors: not its receiver's failure. Recorded as one ("connection failed: refused
        or unreachable (is the receiver up, on that port?)" in the delivery the customer
        reads, a WARNING naming the receiver), it took a step of the retry schedule: a
        minute of it pushed events minutes to hours back. It is given back, due again in
        NO_DESCRIPTOR_DEFER_S, and the log says what is wrong once a minute."""
        if (more := self._repeats.due("no descriptor")) is not None:
            logger.error(
                "customer webhooks are not being sent: %s; each is tried again every %g s"
                " (not counted as an attempt)%s",
                OUT_OF_DESCRIPTORS,
                NO_DESCRIPTOR_DEFER_S,
                more,
            )
        until = self._clock() + NO_DESCRIPTOR_DEFER_S
        try:
            await self._store.defer_deliveries([delivery.id], until)
        except DatabaseError:  # sent once its claim runs out
            return
        self._look_by(until)

    async def _record(
        self, delivery: WebhookDelivery, outcome: DeliveryOutcome
    ) -> RecordedDelivery | None:
        """The attempt's outcome, recorded; a database error is tried again for a few seconds
        (RECORD_RETRY_S). Unrecorded, the delivery stays claimed until its lease runs out, is
        sent again then, and its call's later events wait behind it: a sub-second PostgreSQL
        restart held a third of a burst's webhooks back a minute (probe AJ)."""
        pauses = iter(RECORD_RETRY_S)
        while True:
            take_next = None if self._stopping else self._lease_s
            try:
                return await self._store.record_delivery(delivery.id, outcome, take_next)
            except DatabaseError as exc:
                pause = None if self._stopping else next(pauses, None)
                if pause is None:  # sent again once its lease runs out: at least once
                    # Once a minute: an outage fails the record of every send in flight
                    # (MAX_CONCURRENCY), an ERROR line each.
                    if (more := self._repeats.due("record")) is not None:
                        logger.error(
                            "could not record webhook delivery %d: %s; it is sent again once"
                            " its claim runs out%s",
                            delivery.id,
                            exc,
                            more,
                        )
                    return None
            await asyncio.sleep(pause)

    async def _read_again(self, delivery: WebhookDelivery) -> WebhookDelivery | None:
        try:
            fresh = await self._store.get_delivery(delivery.id)
        except DatabaseError as exc:
            logger.warning(
                "webhook %s (%s): could not be read again before its send (%s); it is sent"
                " once its claim runs out",
                delivery.webhook_id,
                delivery.event_type,
                exc,
                extra={"call_id": delivery.call_id},
            )
            return None
        return fresh

    async def _still_held(self, delivery: WebhookDelivery) -> bool:
        """Whether this server may send `delivery` now: its claim covers the send (15 s), or
        it could be renewed (nobody claimed it since)."""
        if self._lease_until.pop(delivery.id, math.inf) - self._clock() >= REQUEST_TIMEOUT_S:
            return True
        try:
            return await self._store.renew_delivery_claim(delivery.id, self._lease_s)
        except DatabaseError:  # not sent now; the lease runs out and it is claimed again
            return False

    def _free_slot(self, delivery: WebhookDelivery, receiver: str, *, ended: bool = True) -> None:
        """The send of `delivery` is over (`ended`: it was made): its receiver's slot goes to
        the next one waiting."""
        if ended:  # a send of the receiver ended: its give-backs start again from the shortest
            self._progress[receiver] = self._progress[""] = self._clock()
        self._per_receiver[receiver] -= 1
        self._in_flight.pop(delivery.id, None)
        waiting = self._waiting.get(receiver)
        if waiting and not self._stopping:  # its slot, at once
            prompt = self._prompt_now(receiver, self._flight())
            self._start(waiting.popleft(), receiver, prompt, waited=True)
        if not self._waiting.get(receiver, True):  # one entry per receiver ever sent to
            del self._waiting[receiver]  # would grow for good
        if self._per_receiver[receiver] == 0:
            del self._per_receiver[receiver]
            del self._progress[receiver]

    async def _post(
        self, delivery: WebhookDelivery
    ) -> tuple[int | None, str | None, float | None, str]:
        """The receiver's status (None: no answer), the error to record, how long it asked
        us to wait before the next attempt (`asked_wait`), and the start of what a refusing
        receiver answered, quoted ('' if nothing)."""
        if self._session is None:
            return None, "sender stopped", None, ""
        body = webhook_body(delivery)
        headers = sign(self._secret, delivery.webhook_id, datetime.now(UTC), body)
        headers |= {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        try:
            return await self._post_once(delivery, body, headers, replayable=True)
        except _StaleConnection:
            pass
        # Sent again at once, on a new connection (the closed one left the pool): one in
        # ten sends to a receiver that closes idle connections without saying so waited for
        # the next step of the retry ladder (5 s) otherwise. The same id, as on any retry:
        # the receiver may have read the first before it closed, and drops a repeat.
        logger.debug(
            "webhook %s: its kept-alive connection was closed as it was sent; sent again",
            delivery.webhook_id,
            extra={"call_id": delivery.call_id},
        )
        return await self._post_once(delivery, body, headers, replayable=False)

    async def _post_once(
        self, delivery: WebhookDelivery, body: bytes, headers: dict[str, str], replayable: bool
    ) -> tuple[int | None, str | None, float | None, str]:
        """One send of `_post`'s; _StaleConnection if it is `replayable` and went out on a
        kept-alive connection its receiver had closed (`stale_connection`)."""
        if self._session is None:
            return None, "sender stopped", None, ""
        reused = [False]
        _REUSED.set(reused)
        try:
            async with self._session.post(
                delivery.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                # The status decides; the body is read (a little of it) only so that the
                # connection can be used again. One that trickles in is not waited for: a
                # receiver that said 200 and then dripped its body was sent the event again.
                answer = b""
                try:
                    async with asyncio.timeout(BODY_READ_S):
                        answer = await read_capped(resp)
                except (TimeoutError, aiohttp.ClientError):
                    resp.close()
                if 200 <= status < 300:  # (a 101 Switching Protocols is no delivery either)
                    return status, None, None, ""
                said = _quoted_answer(answer)
                if 300 <= status < 400:  # a bare "HTTP 301" read as the receiver's fault
                    moved = "redirects are not followed: give the URL it redirects to"
                    return status, f"HTTP {status} ({moved})", None, ""
                if status == 413:  # the receiver's limit, not a moment's trouble
                    large = (
                        f"the receiver takes no body this large: {len(body):,} bytes; not"
                        " retried: raise its limit, then redeliver it"
                    )
                    return status, f"HTTP 413 ({large})", None, said
                wait = asked_wait(status, resp.headers.get("Retry-After"), time.time())
                asked = "" if wait is None else f" (Retry-After: {wait:.0f} s)"
                return status, f"HTTP {status}{asked}", wait, said
        except TimeoutError:
            return None, f"no answer within {REQUEST_TIMEOUT_S:g} s", None, ""
        except aiohttp.ClientError as exc:
            if replayable and stale_connection(exc, reused[0]):
                raise _StaleConnection from exc
            if isinstance(exc, aiohttp.ClientConnectorError) and out_of_descriptors(exc):
                raise _NoDescriptor from exc  # nothing was sent
            refused = guard_refusal(exc)
            if refused is not None:
                # The address for the operator's log only: last_error is the customer's to read.
                if (more := self._repeats.due(f"refused {refused.address}")) is not None:
                    logger.warning(
                        "webhook %s: %s (%s), refused%s",
                        delivery.webhook_id,
                        refused,
                        refused.address,
                        more,
                        extra={"call_id": delivery.call_id},
                    )
                return None, f"address refused: {refused}", None, ""
            return None, connection_failure(exc), None, ""

    def _count(
        self, delivery: WebhookDelivery, outcome: DeliveryOutcome, receiver: str, now: float
    ) -> None:
        result = {"pending": "retrying"}.get(outcome.state, outcome.state)
        self._metrics.webhook_deliveries.labels(result=result).inc()
        if outcome.state == "delivered":
            # From the event: not a redelivery by hand (round_start, its attempts when
            # redelivered), whose wait was the customer's, maybe days (an alert on the
            # latency paged for a receiver's replay of last week's events).
            if delivery.round_start == 0:
                self._metrics.webhook_latency.observe(max(0.0, now - delivery.event_created_at))
            if receiver in self._failure_said and self._recovery.due(receiver) is not None:
                self._failure_said.discard(receiver)
                logger.info("customer webhooks to %s are delivered again", receiver)
            return
        more = ""
        if outcome.state == "pending":  # a receiver down fails every event: once a minute
            if (held := self._repeats.due(f"retrying {receiver}")) is None:
                return
            more = held
        if len(self._failure_said) >= MAX_FAILURES_SAID:  # one per receiver a client names
            self._failure_said.clear()
        self._failure_said.add(receiver)
        logger.warning(
            "webhook %s (%s) to %s: %s; %s%s",
            delivery.webhook_id,
            delivery.event_type,
            receiver,
            outcome.error or f"HTTP {outcome.status}",
            "retrying" if outcome.state == "pending" else outcome.state,
            more,
            extra={"call_id": delivery.call_id},
        )
