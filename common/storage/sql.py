"""`SqlCallStore`: the CallStore operations, once, over any backend that can run a program.

A backend supplies `_run(program, write=...)`: run the transaction program (common/storage/
programs.py) to its end and return its result, rolling back if it raises. Everything else,
including the clock and the outbox lease, is here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from common.calls.models import (
    Applied,
    CallEvent,
    CallRecord,
    Decide,
    DeliveryOutcome,
    Erasure,
    IdempotencyClaim,
    LostCall,
    NewCall,
    RecordedDelivery,
    StoredAnswer,
    WebhookDelivery,
)
from common.calls.outcomes import Status
from common.contracts import AgentReport
from common.repeats import Repeats
from common.storage import campaign_programs, programs
from common.storage.base import (
    AdmissionLimits,
    BeforeErasing,
    CommitUnknown,
    DatabaseError,
    ErasureUnfinished,
    Placer,
    Refusal,
)
from common.storage.campaign_store import CampaignMethods
from common.storage.paging import Before
from common.storage.programs import LIVE, Dialect, Program

T = TypeVar("T")
DEFAULT_LEASE_S = 60.0


class SqlCallStore(CampaignMethods):
    """Implements `CallStore` (common/storage/base.py) given `_run`."""

    dialect: Dialect

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        instance: str = "",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self._clock = clock
        self.repeats = Repeats()  # an outage fails every query: said once a minute
        # How long this server holds the events it writes before others may dispatch them.
        self.lease_s = lease_s
        # This server among others on one database: it holds the events it writes and the
        # deliveries it claims under this name (see `release_claims`).
        self.instance = instance
        # The embedded sandbox's SANDBOX_TIME_SCALE (1: none, or a real LiveKit).
        self.sandbox_time_scale = 1.0
        # CAMPAIGN_ENFORCE_CALLING_HOURS (the campaigns' events' finish estimates count it).
        self.enforce_calling_hours = True
        # Nothing more can be written until a restart (a SQLite calls.db removed or replaced
        # under the server): /healthz fails, so a platform restarts the server.
        self.restart_needed = False

    def stall_causes(self, *, public: bool) -> str:
        """SQLite's (a file on this host); PostgreSQL names its hosts instead."""
        return "the database is locked by another process, overloaded, or its disk stalls"

    def stop_by(self, deadline: float) -> None:
        """The server is stopping: its last writes (claims given back, calls settled) may
        wait on the database until `deadline` (the loop's clock) at most, all of them
        together (each backend overrides it)."""

    async def _run(self, program: Program[T], *, write: bool) -> T:
        raise NotImplementedError

    async def _read_aside(self, program: Program[T]) -> T:
        """A read whose work grows with its table or its page (counts over every call or
        recipient, pages of the API's lists): a backend may run it apart from the writes, so
        they do not wait for it."""
        return await self._run(program, write=False)

    async def close(self) -> None:
        raise NotImplementedError

    # -- calls ---------------------------------------------------------------------------

    async def create_call(
        self,
        call: NewCall,
        detail: dict[str, Any] | None = None,
        *,
        claim: IdempotencyClaim | None = None,
        limits: AdmissionLimits | None = None,
        now: float | None = None,
    ) -> Applied:
        at = self._clock() if now is None else now
        return await self._run(
            programs.create_call(
                self.dialect, call, detail or {}, claim, limits, at, self.lease_s, self.instance
            ),
            write=True,
        )

    async def get_call(self, call_id: str, *, with_timeline: bool = True) -> CallRecord | None:
        return await self._run(programs.get_call(self.dialect, call_id, with_timeline), write=False)

    async def list_calls(
        self, *, status: Status | None = None, limit: int = 50, before: Before | None = None
    ) -> list[CallRecord]:
        return await self._read_aside(programs.list_calls(self.dialect, status, limit, before))

    async def placed_between(
        self, instance: str, start: float, end: float, limit: int
    ) -> list[CallRecord]:
        program = programs.placed_between(self.dialect, instance, start, end, limit)
        return await self._read_aside(program)

    async def count_live(self) -> int:
        return await self._run(programs.count_live(self.dialect), write=False)

    async def count_pending_deliveries(self) -> int:
        return await self._read_aside(programs.count_pending_deliveries(self.dialect))

    async def count_given_up_events(self) -> int:
        return await self._read_aside(programs.count_given_up_events(self.dialect))

    async def count_by_status(self) -> dict[str, int]:
        return await self._read_aside(programs.count_by_status(self.dialect))

    async def apply(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, Any] | None = None,
        room_finished: bool = False,
        callee_left: bool = False,
        only_if_changed: bool = False,
        ended_at: float | None = None,
        event_at: float | None = None,
        dial_taken: bool = False,
        release_refused: bool = False,
    ) -> Applied:
        program = programs.apply(
            self.dialect,
            call_id,
            kind,
            decide,
            event_id,
            detail or {},
            room_finished,
            self._clock(),
            self.lease_s,
            holder=self.instance,
            callee_left=callee_left,
            only_if_changed=only_if_changed,
            sandbox_time_scale=self.sandbox_time_scale,
            ended_at=ended_at,
            event_at=event_at,
            dial_taken=dial_taken,
            release_refused=release_refused,
        )
        return await self._run(program, write=True)

    async def start_dial(
        self, call_id: str, window_open: Callable[[], bool] | None = None
    ) -> CallRecord | None:
        return await self._run(
            programs.start_dial(self.dialect, call_id, self._clock(), window_open), write=True
        )

    async def request_hangup(self, call_id: str, unanswered: bool = False) -> CallRecord | None:
        return await self._run(
            programs.request_hangup(self.dialect, call_id, self._clock(), unanswered), write=True
        )

    async def release_placement(self, call_id: str) -> None:
        await self._run(programs.release_placement(self.dialect, call_id), write=True)

    async def unmark_dial(self, call_id: str) -> None:
        await self._run(programs.unmark_dial(self.dialect, call_id), write=True)

    async def settle_never_dialled(self, call_id: str, decide: Decide) -> Applied:
        program = programs.settle_never_dialled(
            self.dialect, call_id, decide, self._clock(), self.lease_s, self.instance
        )
        return await self._run(program, write=True)

    async def record_reports(
        self, reports: Sequence[AgentReport], behind: float = 0.0
    ) -> list[Applied]:
        return await self._run(
            programs.record_reports(
                self.dialect, reports, self._clock(), self.lease_s, self.instance, behind
            ),
            write=True,
        )

    async def erase_call_data(self, ended_before: float, limit: int) -> int:
        return await self._run(
            programs.erase_call_data(self.dialect, ended_before, self._clock(), limit),
            write=True,
        )

    async def erase_calls_now(
        self,
        *,
        call_id: str | None = None,
        numbers: Sequence[str] = (),
        before_erasing: BeforeErasing | None = None,
    ) -> Erasure:
        """All or nothing: while one of the calls is live, none is erased (Erasure.live).
        ERASE_NOW_BATCH calls a transaction: all of a number's in one held the write lock
        every other write waits for (SQLite; 20,000 calls: 2 s)."""
        found = programs.calls_to_erase(self.dialect, call_id=call_id, numbers=numbers)
        call_ids, live = await self._run(found, write=False)
        if live:
            return Erasure(live=live)
        now, erased, placed_with = self._clock(), list[str](), list[dict[str, Any]]()
        # The campaign recipients first, in a transaction of their own (locked as a cancel
        # locks them; no call row with them): one being called is live, nothing erased.
        found_recipients = campaign_programs.recipients_to_erase(
            self.dialect, call_id=call_id, numbers=numbers
        )
        keys = await self._read_aside(found_recipients)
        recipients = campaign_programs.erase_recipients_now(self.dialect, now, keys)
        recipients_erased, live, ending = await self._run(recipients, write=True)
        if live or ending:
            return Erasure(live=live, ending=ending)
        events: list[CallEvent] = []
        unknown = 0  # calls of a batch whose commit's answer was lost: erased, or not
        try:
            # A paused campaign whose last waiting recipients went stayed paused with all of
            # them final, campaign.completed never sent: it completes (a running one too).
            for campaign_id in sorted({key[0] for key in keys}) if recipients_erased else ():
                events += await self.complete_if_done(campaign_id, now)
            for start in range(0, len(call_ids), programs.ERASE_NOW_BATCH):
                batch = call_ids[start : start + programs.ERASE_NOW_BATCH]
                # What the batch was placed with, read first: a commit whose answer was lost
                # (PostgreSQL's connection) may have erased it, and the retry then found no
                # name to look for in config.json (its set-aside copies kept it for good).
                before = await self._read_aside(programs.configs_of(batch))
                if before_erasing is not None:
                    await before_erasing(batch, before)
                try:
                    ids, configs = await self._run(
                        programs.erase_calls_now(self.dialect, now, batch), write=True
                    )
                except CommitUnknown:  # taken as erased: its config.json copies go too
                    unknown = len(batch)
                    erased += batch
                    placed_with += before
                    raise
                erased += ids
                placed_with += configs
        except DatabaseError as exc:
            if not erased and not recipients_erased:
                raise  # nothing erased: all or nothing held
            # Part of it is erased (the recipients, some batches of calls), the rest not: a
            # bare "calls database unavailable" read as nothing done, and what the erased
            # calls were placed with (config.json) was left behind for good.
            done = Erasure(
                erased=tuple(erased),
                erased_at=now,
                recipients=recipients_erased,
                placed_with=tuple(placed_with),
                events=tuple(events),
            )
            raise ErasureUnfinished(exc, done, len(call_ids), unknown) from exc
        return Erasure(
            erased=tuple(erased),
            erased_at=now if erased or recipients_erased else None,
            recipients=recipients_erased,
            placed_with=tuple(placed_with),
            events=tuple(events),
        )

    # -- customer webhooks ---------------------------------------------------------------

    async def claim_due_deliveries(
        self, now: float, lease_s: float, limit: int
    ) -> list[WebhookDelivery]:
        return await self._run(
            programs.claim_due_deliveries(self.dialect, now, lease_s, limit, self.instance),
            write=True,
        )

    async def record_delivery(
        self, delivery_id: int, outcome: DeliveryOutcome, take_next_for_s: float | None = None
    ) -> RecordedDelivery:
        take_next = None if take_next_for_s is None else (take_next_for_s, self.instance)
        return await self._run(
            programs.record_delivery(self.dialect, delivery_id, outcome, self._clock(), take_next),
            write=True,
        )

    async def release_claims(self) -> int:
        return await self._run(programs.release_claims(self.dialect, self.instance), write=True)

    async def free_behind(self) -> int:
        return await self._run(programs.free_behind(self.dialect), write=True)

    async def pull_back_deliveries(self, now: float, step_s: float) -> int:
        program = programs.pull_back_deliveries(self.dialect, now, step_s, self.instance)
        return await self._run(program, write=True)

    async def defer_deliveries(self, delivery_ids: list[int], until: float) -> None:
        await self._run(programs.defer_deliveries(self.dialect, delivery_ids, until), write=True)

    async def renew_delivery_claim(self, delivery_id: int, lease_s: float) -> bool:
        until = self._clock() + lease_s
        program = programs.renew_delivery_claim(self.dialect, delivery_id, self.instance, until)
        return await self._run(program, write=True)

    async def next_delivery_at(self, unclaimed_at: float | None = None) -> float | None:
        return await self._run(programs.next_delivery_at(self.dialect, unclaimed_at), write=False)

    async def list_deliveries(
        self, call_id: str, limit: int | None = None, after: int = 0
    ) -> list[WebhookDelivery]:
        return await self._read_aside(programs.list_deliveries(self.dialect, call_id, limit, after))

    async def get_delivery(self, delivery_id: int) -> WebhookDelivery | None:
        return await self._read_aside(programs.get_delivery(delivery_id))

    async def redeliver(self, delivery_id: int) -> WebhookDelivery | None:
        return await self._run(
            programs.redeliver(self.dialect, delivery_id, self._clock()), write=True
        )

    # -- the reaper ----------------------------------------------------------------------

    async def stale_live_calls(
        self,
        now: float,
        margin_s: float,
        stretch: float = 1.0,
        finished_before: float = 0.0,
        steps: Sequence[tuple[float, float]] = (),
    ) -> list[LostCall]:
        return await self._run(
            programs.stale_live_calls(self.dialect, now, margin_s, stretch, finished_before, steps),
            write=False,
        )

    async def graceless_finished(
        self, finished_before: float, late_finished_before: float | None = None
    ) -> list[str]:
        return await self._run(
            programs.graceless_finished(self.dialect, finished_before, late_finished_before),
            write=False,
        )

    async def never_dialled(
        self,
        created_before: float,
        steps: Sequence[tuple[float, float]] = (),
        placer: Placer | None = None,
    ) -> list[str]:
        return await self._run(
            programs.never_dialled(self.dialect, created_before, steps, placer), write=False
        )

    async def unfinished_rooms(
        self, dialled_before: float, sandbox_instance: str | None = None
    ) -> list[LostCall]:
        program = programs.unfinished_rooms(self.dialect, dialled_before, sandbox_instance)
        return await self._run(program, write=False)

    async def unreported_dialled(
        self, dialled_before: float, sandbox_instance: str | None = None
    ) -> list[str]:
        program = programs.unreported_dialled(self.dialect, dialled_before, sandbox_instance)
        return await self._run(program, write=False)

    async def agent_seen(self, call_id: str) -> bool:
        return await self._run(programs.agent_seen(call_id), write=False)

    async def agent_gone_unsettled(
        self, left_before: float, sandbox_instance: str | None = None
    ) -> list[str]:
        program = programs.agent_gone_unsettled(self.dialect, left_before, sandbox_instance)
        return await self._run(program, write=False)

    async def sandbox_owners(self, created_before: float) -> list[str]:
        return await self._run(programs.sandbox_owners(self.dialect, created_before), write=False)

    async def lost_sandbox_calls(
        self, instance: str | None, created_before: float
    ) -> list[LostCall]:
        return await self._run(
            programs.lost_sandbox_calls(self.dialect, instance, created_before), write=False
        )

    async def unanswered_calls_to(self, numbers: list[str]) -> list[str]:
        return await self._run(programs.unanswered_calls_to(numbers), write=False)

    async def live_among(self, call_ids: list[str]) -> set[str]:
        return await self._run(programs.among(self.dialect, call_ids, LIVE), write=False)

    async def known_among(self, call_ids: list[str]) -> set[str]:
        return await self._run(programs.among(self.dialect, call_ids, ()), write=False)

    async def erased_among(self, call_ids: list[str]) -> set[str]:
        return await self._run(programs.erased_among(self.dialect, call_ids), write=False)

    async def probe_write(self, instance: str) -> None:
        await self._run(programs.probe_write(self.dialect, instance, self._clock()), write=True)

    # -- idempotency ---------------------------------------------------------------------

    async def get_idempotent(self, client: str, key: str) -> StoredAnswer | None:
        return await self._run(programs.get_idempotent(client, key), write=False)

    async def answer_idempotent(
        self, client: str, key: str, bound_to: str, status: int, body: dict[str, Any]
    ) -> None:
        program = programs.answer_idempotent(self.dialect, client, key, bound_to, status, body)
        await self._run(program, write=True)

    # -- admission -----------------------------------------------------------------------

    async def admission_refusal(
        self, client: str, limits: AdmissionLimits, now: float, number: str | None = None
    ) -> Refusal | None:
        program = programs.admission_refusal(client, limits, now, number)
        return await self._run(program, write=False)

    # -- the outbox ----------------------------------------------------------------------

    async def ack_events(self, event_ids: list[int], now: float) -> None:
        await self._run(programs.ack_events(self.dialect, event_ids, now), write=True)

    async def claim_stale_events(
        self,
        now: float,
        lease_s: float,
        limit: int,
        *,
        take_own: bool = False,
        held: Sequence[int] = (),
    ) -> list[CallEvent]:
        return await self._run(
            programs.claim_stale_events(
                self.dialect, now, lease_s, limit, self.instance, take_own, held
            ),
            write=True,
        )

    async def purge_dispatched_events(self, before: float, limit: int | None = None) -> int:
        program = programs.purge_dispatched_events(self.dialect, before, limit)
        return await self._run(program, write=True)

    async def purge_rate_buckets(self, now: float) -> int:
        return await self._run(programs.purge_rate_buckets(self.dialect, now), write=True)
