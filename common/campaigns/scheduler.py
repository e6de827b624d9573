"""The campaign scheduler: runs on every server, drives each running campaign from one of them.

Every `tick_s` a server claims the due campaigns (its own, scheduled ones whose start came,
and those whose driver's lease ran out: a dead server's) and starts a driver for each. A
driver places its campaign's calls one by one:

* pacing: calls go out on a grid of `1 / calls_per_second` slots, never before their slot (so
  no second holds more than calls_per_second + 1), a late one not shifting the grid and a
  campaign that fell behind never bursting to catch up (`next_slot`); and never more than
  `max_concurrent` attempts live
  (being placed, or placed and not ended). The pacing slot is kept in the campaign row, so a
  server taking over carries on at the same pace;
* calling hours: a due recipient outside its window (in every zone its number may ring in,
  and the 08:00-21:00 floor unless CAMPAIGN_ENFORCE_CALLING_HOURS=0) waits for the window's
  next opening (`waiting_window`);
* single-shot: each attempt is a row (campaign, recipient, attempt) written before the call is
  placed, and the call is placed under an Idempotency-Key made of that triple, bound in the
  call's own transaction. An attempt found still `placing` after a crash is placed again
  under the same key: the admission answers with the call it already made, if any, so nobody
  is dialled twice for one attempt;
* every call goes through the admission service like any other (rate limit, live-call cap,
  do-not-call list): a refusal by a limit gives the attempt back and waits Retry-After;
* LiveKit over a limit of its own (429, `resource_exhausted`: its limit on the project, which
  every campaign shares) holds every campaign's placing for the wait LiveKit asked, else
  LIVEKIT_HOLD_S doubling while it lasts (`_over_limit`).

A call's end reaches the scheduler as its `call.ended` event (the outbox, on whichever server
settled it): the attempt ends, and the recipient is due again (a retry `delay_s` later) or
final; the campaign completes when no recipient is left open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from common.background import kept_running
from common.calls.admission import Placement
from common.calls.errors import (
    InvalidCall,
    KeyReused,
    OnDoNotCallList,
    RateLimited,
    TooManyLiveCalls,
)
from common.calls.events import CALL_ENDED, EventDispatcher
from common.calls.models import CAMPAIGN_KEY_PREFIX, AttemptRef, CallEvent, IdempotencyClaim
from common.calls.request import RequestRules
from common.calls.service import OVER_LIMIT_HEARD, CallService, WebhookHostUnresolved
from common.campaigns.model import (
    DNC,
    INVALID,
    WAITING_WINDOW,
    AttemptPlan,
    CampaignRecord,
    CampaignStatus,
    RecipientRecord,
)
from common.campaigns.request import merged, never_open
from common.campaigns.windows import call_zones, is_allowed, next_allowed
from common.clock_steps import ClockSteps
from common.config_store.store import ConfigWriteError
from common.descriptors import OutOfDescriptors
from common.livekit.client import LiveKitError, LiveKitOverLimit
from common.masking import redact
from common.repeats import Repeats
from common.storage.base import AttemptWithdrawn, CallStore, DatabaseError, WindowClosed
from common.storage.campaign_programs import STEP_BACK_TOLERANCE_S, OnList
from common.waiting import wait_set

logger = logging.getLogger(__name__)

DUE_BATCH = 50  # due recipients read at once
IDLE_WAIT_S = 1.0  # a driver with nothing due looks again this often (or when woken)
RECOVER_EVERY_S = 30.0  # attempts left `placing` by a failure are given back this often
MAX_DEFECT_TRIES = 3  # an attempt whose placing raised the unexpected this often is ended
# A webhook host that does not resolve when an attempt is placed: the attempt waits this long
# and is placed again, this many times in all, before its recipient is `invalid`.
UNRESOLVED_RETRY_S = 60.0
MAX_UNRESOLVED_TRIES = 10
# LiveKit over a limit of its own and saying no wait: no campaign call is placed for this
# long, twice as long at each over-limit answer while it lasts, up to LIVEKIT_HOLD_MAX_S.
LIVEKIT_HOLD_S = 5.0
LIVEKIT_HOLD_MAX_S = 300.0
CLAIM_BATCH = 100


def attempt_claim(client: str, ref: AttemptRef, body: dict[str, object]) -> IdempotencyClaim:
    """The Idempotency-Key of one attempt: the same for every try at placing it."""
    return IdempotencyClaim.of(
        client, f"{CAMPAIGN_KEY_PREFIX}{ref.campaign_id}:{ref.idx}:{ref.attempt}", body
    )


@dataclass
class _Driver:
    campaign: CampaignRecord
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # The campaign clock against the monotonic clock, from one recovery pass to the next.
    steps: ClockSteps = field(default_factory=ClockSteps)
    # With none of its attempts live and nobody due: when its next recipient falls due (a
    # retry, its calling window), by the campaign clock. Until then its steps read nothing:
    # each read three queries a second, and 2,000 campaigns waiting for their window (one a
    # lead, say) took 43% of the server's one thread doing so, /healthz 116 ms at p90.
    # Forgotten when a call of it ends, at each recovery pass, and when the campaign clock
    # is found behind where it was when this was read (a step back makes rows due: _claim).
    idle_until: float | None = None
    idle_from: float = 0.0


class CampaignScheduler:
    def __init__(
        self,
        store: CallStore,
        calls: CallService,
        events: EventDispatcher,
        rules: RequestRules,
        *,
        enforce_calling_hours: bool,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._calls = calls
        self._events = events
        self._rules = rules
        self._enforce = enforce_calling_hours
        self._lease_s = lease_s
        self.tick_s = min(1.0, lease_s / 3)
        self.clock = clock
        self._drivers: dict[str, _Driver] = {}
        # Placements running, by attempt: a count, as a pause may hand an attempt back and a
        # resume begin it again (same number, same key) while the first placing still runs.
        self._inflight: collections.Counter[tuple[str, int, int]] = collections.Counter()
        self._defects: dict[tuple[str, int, int], int] = {}  # unexpected errors per attempt
        self._unresolved: dict[tuple[str, int, int], int] = {}  # webhook host lookups failed
        self._repeats = Repeats()  # a database outage fails every poll: said once a minute
        self._placing: set[asyncio.Task[None]] = set()
        # No campaign call placed before this (time.monotonic(): a wait, which a wall clock
        # stepped back would have lengthened): LiveKit over a limit.
        self._livekit_hold_until = 0.0
        self._livekit_holds = 0  # over-limit answers in a row, each hold twice as long
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._events.subscribe("campaigns", self.on_event)
        self._task = asyncio.get_running_loop().create_task(
            kept_running("campaign scheduler", self._run), name="campaigns"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop placing; let placements in flight finish (bounded); hand the campaigns over."""
        tasks = [t for t in (self._task, *(d.task for d in self._drivers.values())) if t]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._placing:
            await asyncio.wait(self._placing, timeout=timeout)
        self._drivers.clear()
        try:
            await self._store.release_campaigns()
        except DatabaseError as exc:
            logger.warning("could not hand campaigns over at stop: %s", exc)

    def wake(self) -> None:
        """Look for due campaigns now (one was created or resumed)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # Cleared before the claim: a wake while it runs (a campaign created or resumed
            # after its read) claims again at once. Cleared after it, that campaign waited
            # for the next tick (a second) for its first call.
            self._wake.clear()
            try:
                await self._claim()
            except DatabaseError as exc:
                if (more := self._repeats.due("scheduler")) is not None:
                    logger.error("campaign scheduler: %s%s", exc, more)
            except Exception:  # a defect: its traceback once a minute, not every tick
                if (more := self._repeats.due("scheduler defect")) is not None:
                    logger.exception("campaign scheduler failed; going on%s", more)
            await wait_set(self._wake, self.tick_s)

    async def _claim(self) -> None:
        claimed, events = await self._store.claim_campaigns(
            self.clock(), self._lease_s, CLAIM_BATCH
        )
        self._events.publish(events)
        current = {c.campaign_id: c for c in claimed}
        for campaign_id in list(self._drivers):
            if campaign_id not in current:  # paused, over, or another server drives it now
                self._stop_driver(campaign_id)
        for campaign in claimed:
            driver = self._drivers.get(campaign.campaign_id)
            if driver is None or driver.task is None or driver.task.done():
                driver = _Driver(campaign)
                self._drivers[campaign.campaign_id] = driver
                driver.task = asyncio.get_running_loop().create_task(
                    self._drive(driver), name=f"campaign-{campaign.campaign_id}"
                )
                logger.info(
                    "campaign %s (%s): driving it on this server (%d recipients)",
                    campaign.campaign_id,
                    redact(campaign.name),
                    campaign.total,
                )
            else:  # its slot as the driver has it: one pulled back from a clock's step stays
                slot = min(campaign.next_dial_at, driver.campaign.next_dial_at)
                driver.campaign = _with_slot(campaign, slot)

    def _stop_driver(self, campaign_id: str) -> None:
        driver = self._drivers.pop(campaign_id, None)
        if driver is not None and driver.task is not None:
            driver.task.cancel()

    # ------------------------------------------------------------------ events

    async def on_event(self, event: CallEvent) -> None:
        """A campaign call ended: end its attempt (raising makes the outbox retry it)."""
        if event.type != CALL_ENDED or not event.data.get("campaign_id"):
            return
        events = await self._store.finish_call_attempt(
            event.call_id, str(event.data["status"]), self.clock(), enforce_hours=self._enforce
        )
        self._events.publish(events)
        driver = self._drivers.get(str(event.data["campaign_id"]))
        if driver is not None:
            driver.idle_until = None
            driver.wake.set()

    # ------------------------------------------------------------------ a driver

    async def _drive(self, driver: _Driver) -> None:
        campaign_id = driver.campaign.campaign_id
        last_recovery = -RECOVER_EVERY_S
        queue: list[RecipientRecord] = []
        while True:
            try:
                if time.monotonic() - last_recovery >= RECOVER_EVERY_S:
                    driver.idle_until = None
                    await self._recover(driver)
                    last_recovery = time.monotonic()
                wait = await self._step(driver, queue)
            except asyncio.CancelledError:
                raise
            except DatabaseError as exc:
                if (more := self._repeats.due(f"driver {campaign_id}")) is not None:
                    logger.error("campaign %s: %s; trying again%s", campaign_id, exc, more)
                wait = IDLE_WAIT_S
            except Exception:  # a defect: its traceback once a minute, not every second
                if (more := self._repeats.due(f"driver defect {campaign_id}")) is not None:
                    logger.exception(
                        "campaign %s: driver step failed; trying again%s", campaign_id, more
                    )
                wait = IDLE_WAIT_S
            if wait is None:
                return
            if wait > 0:
                driver.wake.clear()
                await wait_set(driver.wake, wait)

    async def _step(self, driver: _Driver, queue: list[RecipientRecord]) -> float | None:
        """Place at most one call; the seconds to wait before the next step (None: stop)."""
        campaign = driver.campaign
        if campaign.status is not CampaignStatus.RUNNING:
            return None
        pacing = campaign.spec.pacing
        now = self.clock()
        if campaign.next_dial_at > now + pacing.interval_s:
            # Set by a clock since stepped back (NTP): a slot is never more than an interval
            # ahead of the call before it, and waiting for it held the campaign for the step.
            driver.campaign = campaign = _with_slot(campaign, now + pacing.interval_s)
        if now < campaign.next_dial_at:
            return campaign.next_dial_at - now
        if (held_s := self._livekit_hold_until - time.monotonic()) > 0:
            return held_s
        if driver.idle_until is not None and driver.idle_from <= now < driver.idle_until:
            return min(IDLE_WAIT_S, driver.idle_until - now)  # the clock is looked at alone
        driver.idle_until = None
        live, _ = await self._store.open_attempts(campaign.campaign_id)
        if live >= pacing.max_concurrent:
            return IDLE_WAIT_S  # woken as soon as one of its calls ends
        if not queue:
            due = await self._store.due_recipients(campaign.campaign_id, now, DUE_BATCH)
            if due.unreadable:  # set aside (said): the next list reads those after them
                await self._store.set_aside_recipients(campaign.campaign_id, due.unreadable, now)
            queue.extend(due.readable)
            if not queue and due.unreadable:
                return 0
            if not queue:
                events = await self._store.complete_if_done(campaign.campaign_id, now)
                self._events.publish(events)
                if events:
                    return None
                if not live:  # nothing of it can fall due sooner but by the clock
                    driver.idle_until = await self._store.next_due_at(campaign.campaign_id)
                    driver.idle_from = now
                return IDLE_WAIT_S
        recipient = queue.pop(0)
        if not await self._in_window(campaign, recipient, now):
            return 0
        next_dial_at = next_slot(campaign.next_dial_at, now, pacing.interval_s)
        plan = await self._store.begin_attempt(
            campaign.campaign_id, recipient.idx, next_dial_at, now
        )
        if isinstance(plan, OnList):
            logger.info(
                "campaign %s: recipient %d is on the do-not-call list; skipped",
                campaign.campaign_id,
                recipient.idx,
            )
            return 0
        if plan is None:  # not due any more, or the campaign stopped: read it again
            queue.clear()
            fresh = await self._store.get_campaign(campaign.campaign_id)
            if fresh is None or fresh.unreadable is not None:  # (the claim says why)
                return None
            driver.campaign = fresh
            return 0
        driver.campaign = _with_slot(campaign, next_dial_at)
        self._spawn(campaign, plan)
        return 0

    async def _in_window(
        self, campaign: CampaignRecord, recipient: RecipientRecord, now: float
    ) -> bool:
        """True if the recipient may be called now; else it waits for its window."""
        window = campaign.spec.window
        at = dt.datetime.fromtimestamp(now, dt.UTC)
        zones = _zones(campaign, recipient.phone_number, recipient.fields)
        if is_allowed(at, window, zones, enforce_calling_hours=self._enforce):
            return True
        opens = next_allowed(at, window, zones, enforce_calling_hours=self._enforce)
        if opens is None:  # never (CAMPAIGN_ENFORCE_CALLING_HOURS turned on since, say): it
            # ends invalid, saying why; left waiting, it was looked at daily for good and its
            # campaign never completed.
            why = never_open(at, window, zones, enforce_hours=self._enforce)
            error = {"field": "phone_number", "error": why}
            await self._store.defer_recipient(
                campaign.campaign_id, recipient.idx, INVALID, now, now, [error]
            )
            if (more := self._repeats.due(f"never open {campaign.campaign_id}")) is not None:
                logger.warning(
                    "campaign %s: recipient %d is invalid: its calling window never opens%s",
                    campaign.campaign_id,
                    recipient.idx,
                    more,
                )
            return False
        await self._store.defer_recipient(
            campaign.campaign_id, recipient.idx, WAITING_WINDOW, opens.timestamp(), now
        )
        return False

    # ------------------------------------------------------------------ placing

    def _spawn(self, campaign: CampaignRecord, plan: AttemptPlan) -> None:
        key = (plan.campaign_id, plan.idx, plan.attempt)
        self._inflight[key] += 1

        async def place() -> None:
            try:
                await self._place(campaign, plan)
                self._defects.pop(key, None)
            except DatabaseError as exc:  # recording what placing did: an outage, no defect
                self._say_not_recorded(plan, exc)
            except Exception as exc:  # a defect: said now, with its context (the attempt stays
                # placing; the recovery pass gives it back, placed again under the same key)
                logger.exception(
                    "campaign %s: recipient %d attempt %d: unexpected error while placing",
                    plan.campaign_id,
                    plan.idx,
                    plan.attempt,
                )
                await self._after_defect(key, exc)
            finally:
                self._inflight[key] -= 1
                if self._inflight[key] <= 0:
                    del self._inflight[key]

        self._track(place())

    def _say_not_recorded(self, plan: AttemptPlan | AttemptRef, exc: DatabaseError) -> None:
        """The database failed as what placing did (a refusal, a listed number) was written:
        the attempt stays placing; the recovery pass gives it back, placed again under its key."""
        if (more := self._repeats.due(f"recording {plan.campaign_id}")) is not None:
            logger.error(
                "campaign %s: recipient %d attempt %d: not recorded (%s); it is placed again%s",
                plan.campaign_id,
                plan.idx,
                plan.attempt,
                exc,
                more,
            )

    async def _after_defect(self, key: tuple[str, int, int], exc: Exception) -> None:
        """An attempt whose placing keeps raising the unexpected is ended (its recipient
        `invalid`, the error in its row) after MAX_DEFECT_TRIES: left `placing`, it held one
        of the campaign's concurrent slots for good and the campaign never completed."""
        tries = self._defects[key] = self._defects.get(key, 0) + 1
        if tries < MAX_DEFECT_TRIES:
            return
        ref = AttemptRef(*key)
        error = f"could not be placed: {type(exc).__name__} on {tries} tries (see the server log)"
        try:
            await self._end(ref, INVALID, [{"field": "row", "error": error}])
        except Exception as end_exc:  # the next recovery pass tries again
            logger.error(
                "campaign %s: recipient %d attempt %d could not be ended: %s",
                ref.campaign_id,
                ref.idx,
                ref.attempt,
                end_exc,
            )
            return
        del self._defects[key]
        logger.error(
            "campaign %s: recipient %d attempt %d: gave up after %d unexpected errors; "
            "the recipient is invalid",
            ref.campaign_id,
            ref.idx,
            ref.attempt,
            tries,
        )

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._placing.add(task)
        task.add_done_callback(self._placing.discard)

    async def _place(self, campaign: CampaignRecord, plan: AttemptPlan) -> None:
        ref = AttemptRef(plan.campaign_id, plan.idx, plan.attempt)
        body = merged(campaign.spec.defaults, {**plan.fields, "phone_number": plan.phone_number})
        key = (plan.campaign_id, plan.idx, plan.attempt)
        unresolved = self._unresolved.pop(key, 0)
        OVER_LIMIT_HEARD.set(self._over_limit)  # this placement's task (its own context)
        try:
            call = self._rules.parse(body)
            placement = Placement(campaign.client, attempt_claim(campaign.client, ref, body))
            placed = await self._calls.place(
                call, placement, campaign=ref, window_open=self._window_open(campaign, plan)
            )
        except OnDoNotCallList:
            await self._end(ref, DNC)
        except WebhookHostUnresolved as exc:
            await self._host_unresolved(ref, exc, unresolved + 1)
        except InvalidCall as exc:  # the server's rules changed since the campaign was made
            await self._end(ref, INVALID, [e.to_json() for e in exc.errors])
        except KeyReused:
            await self._end(ref, INVALID, [{"field": "row", "error": "changed since placed"}])
        except (TooManyLiveCalls, RateLimited) as exc:
            now = self.clock()
            await self._store.attempt_refused(ref, now + exc.retry_after_s, now)
            # Once a minute a campaign: held at the cap, its driver tries the next recipient
            # at every pacing slot, each refused alike (a line per slot, 20 a second).
            if (more := self._repeats.due(f"limited {ref.campaign_id}")) is not None:
                logger.info(
                    "campaign %s: %s; recipient %d waits %d s%s",
                    ref.campaign_id,
                    exc,
                    ref.idx,
                    exc.retry_after_s,
                    more,
                )
        except WindowClosed:
            logger.info(
                "campaign %s: recipient %d attempt %d not dialled: its calling window closed"
                " while the call was being placed; it waits for the window to open again",
                ref.campaign_id,
                ref.idx,
                ref.attempt,
            )
        except AttemptWithdrawn:
            logger.info(
                "campaign %s: recipient %d attempt %d not placed: the campaign was paused or"
                " canceled meanwhile",
                ref.campaign_id,
                ref.idx,
                ref.attempt,
            )
        except LiveKitOverLimit as exc:
            self._over_limit(exc)  # the call is recorded failed, its attempt not_dialled
        except LiveKitError:
            pass  # the call is recorded failed: its call.ended event ends the attempt
        except (DatabaseError, ConfigWriteError, OutOfDescriptors) as exc:
            # A full disk or a database outage refuses every attempt: once a minute a
            # campaign (each of its slots logged one, max_concurrent lines each round).
            if (more := self._repeats.due(f"not placed {ref.campaign_id}")) is not None:
                logger.error(
                    "campaign %s: recipient %d attempt %d not placed yet (%s); will try again%s",
                    ref.campaign_id,
                    ref.idx,
                    ref.attempt,
                    exc,
                    more,
                )
        else:
            self._livekit_holds = 0
            if placed.bound is not None:
                logger.info(
                    "campaign %s: attempt %d of recipient %d was placed before as %s",
                    ref.campaign_id,
                    ref.attempt,
                    ref.idx,
                    placed.bound.call_id,
                )

    def _over_limit(self, exc: LiveKitOverLimit) -> None:
        """LiveKit answered a campaign call over a limit of its own: no campaign places a call
        until the wait it asked is over (else LIVEKIT_HOLD_S, doubling while it lasts). Each
        driver went on at its pacing: every slot a request LiveKit refused (and a call
        recorded failed), every recipient's attempt not_dialled in turn, and a throttle of
        half an hour ended every recipient `failed`, nobody called, the campaign completed."""
        now = time.monotonic()
        if now >= self._livekit_hold_until:  # a new hold (not one more of those in flight)
            self._livekit_holds += 1
        backoff = LIVEKIT_HOLD_S * 2.0 ** min(self._livekit_holds - 1, 20)
        wait = exc.retry_after_s or min(backoff, LIVEKIT_HOLD_MAX_S)
        self._livekit_hold_until = max(self._livekit_hold_until, now + wait)
        if (more := self._repeats.due("livekit over limit")) is not None:
            logger.warning(
                "campaigns: LiveKit is over a limit of its own (%s): no campaign call is"
                " placed for %.0f s%s",
                exc.reason,
                self._livekit_hold_until - now,
                more,
            )

    def _window_open(self, campaign: CampaignRecord, plan: AttemptPlan) -> Callable[[], bool]:
        """Whether the attempt's calling window is open now: asked as its dial is marked,
        for its window may close while it is being placed (up to ~35 s)."""
        window = campaign.spec.window
        zones = _zones(campaign, plan.phone_number, plan.fields)

        def window_open() -> bool:
            at = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            return is_allowed(at, window, zones, enforce_calling_hours=self._enforce)

        return window_open

    async def _host_unresolved(
        self, ref: AttemptRef, exc: WebhookHostUnresolved, tries: int
    ) -> None:
        """The attempt's webhook host gave no address: placed again UNRESOLVED_RETRY_S later
        (nothing was placed), until MAX_UNRESOLVED_TRIES; then its recipient is invalid."""
        errors = [e.to_json() for e in exc.errors]
        if tries >= MAX_UNRESOLVED_TRIES:
            note = f"; {tries} tries over {(tries - 1) * UNRESOLVED_RETRY_S / 60:g} min"
            await self._end(ref, INVALID, [{**e, "error": e["error"] + note} for e in errors])
            logger.warning(
                "campaign %s: recipient %d is invalid: %s%s",
                ref.campaign_id,
                ref.idx,
                errors[0]["error"] if errors else exc,
                note,
            )
            return
        now = self.clock()
        await self._store.attempt_refused(ref, now + UNRESOLVED_RETRY_S, now)
        self._unresolved[(ref.campaign_id, ref.idx, ref.attempt)] = tries
        if (more := self._repeats.due(f"unresolved {ref.campaign_id}")) is not None:
            logger.warning(
                "campaign %s: recipient %d waits %g s (try %d of %d): %s%s",
                ref.campaign_id,
                ref.idx,
                UNRESOLVED_RETRY_S,
                tries,
                MAX_UNRESOLVED_TRIES,
                errors[0]["error"] if errors else exc,
                more,
            )

    async def _end(
        self, ref: AttemptRef, status: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        events = await self._store.end_attempt(ref, status, self.clock(), errors=errors)
        self._events.publish(events)

    async def _recover(self, driver: _Driver) -> None:
        """Attempts left `placing` (a crash, a failed write): given back, to be placed again
        by the driver's steps under the same key (the same attempt number). Recipients whose
        wait was counted from a clock since stepped back wait from now (looked for as the
        driver starts, and after a step back: each look reads the campaign's pending rows,
        20-50 ms for 100,000 on SQLite)."""
        campaign = driver.campaign
        now = self.clock()
        step = driver.steps.step(now)
        stepped_back = step is None or step < -STEP_BACK_TOLERANCE_S
        if stepped_back and (
            pulled := await self._store.pull_back_after_step(campaign.campaign_id, now)
        ):
            logger.warning(
                "campaign %s: this server's clock is behind the time %d recipients' next"
                " attempt was set at (it stepped back): their wait counts from now",
                campaign.campaign_id,
                pulled,
            )
        _, placing = await self._store.open_attempts(campaign.campaign_id)
        for ref in placing:
            if (ref.campaign_id, ref.idx, ref.attempt) in self._inflight:
                continue
            # Nothing of it is recorded (a call recorded links its attempt in its own
            # transaction), so it is given back, due when it was, and begun again as any due
            # recipient: in its window, on a pacing slot, the list read again. Placed here
            # at once, a server restarted in the night dialled it then, and attempts a full
            # disk had held went out together, whatever calls_per_second said.
            try:
                await self._store.attempt_refused(ref, None, now)
            except DatabaseError as exc:  # the next pass gives it back; the others go on
                self._say_not_recorded(ref, exc)
                continue
            logger.warning(
                "campaign %s: attempt %d of recipient %d was left being placed; it is placed"
                " again in its turn, under the same key",
                ref.campaign_id,
                ref.attempt,
                ref.idx,
            )
            driver.wake.set()


def next_slot(slot: float, now: float, interval_s: float) -> float:
    """The slot after a call placed now in `slot`: calls go on a grid of `interval_s`, never
    before their slot, so a call a little late does not slow the campaign down; one that fell
    a whole interval behind (waiting for a free line, a window, a restart) starts a new grid
    from now rather than catching up in a burst."""
    return (slot if slot > now - interval_s else now) + interval_s


def _zones(campaign: CampaignRecord, phone_number: str, fields: dict[str, Any]) -> tuple[str, ...]:
    """The time zones a recipient's number may ring in (its window must be open in each)."""
    return call_zones(
        phone_number,
        fields.get("additional_params"),
        campaign.spec.defaults.get("additional_params"),
    )


def _with_slot(campaign: CampaignRecord, next_dial_at: float) -> CampaignRecord:
    return replace(campaign, next_dial_at=next_dial_at)
