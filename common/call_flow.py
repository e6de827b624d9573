"""The life of a call on our side: place it, follow LiveKit's events, hang up, reap strays.

`CallService` ties the config store, the calls database and the LiveKit client together; the
HTTP handlers only parse and shape responses around it. Every status change goes through
`_settle`, which logs one line per change and removes the call's config record once the call
is over.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import aiofiles.os
from livekit import api
from livekit.protocol import webhook

from common.call_request import OutboundCall
from common.calls_db import Applied, CallRecord, CallsDB, DatabaseError, Decide, NewCall
from common.livekit_calls import LiveKitError, end_room, place_call
from common.masking import mask_phone
from common.metrics import Metrics
from common.outcomes import (
    FINAL_STATUSES,
    CallState,
    Change,
    Signal,
    Status,
    next_state,
    signal_from_event,
)
from common.settings import Settings
from common.update_config import ConfigStore, ConfigWriteError, UnknownCallError

logger = logging.getLogger(__name__)

CALL_ID_PREFIX = "call-"
REAPER_MARGIN_S = 60.0


def new_call_id() -> str:
    return f"{CALL_ID_PREFIX}{secrets.token_hex(6)}"


class TooManyLiveCalls(Exception):
    """CALLS_MAX_ACTIVE calls are live already; nothing was written."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"too many live calls: at most {limit} at once")
        self.limit = limit


class HangupResult(Enum):
    UNKNOWN = "unknown"
    ALREADY_FINAL = "already_final"
    HANGING_UP = "hanging_up"
    CANCELED = "canceled"


def _fixed(change: Change) -> Decide:
    """A decision that applies `change` unless the call is already over."""

    def decide(state: CallState) -> Change | None:
        return None if state.status in FINAL_STATUSES else change

    return decide


@dataclass
class CallService:
    settings: Settings
    store: ConfigStore
    db: CallsDB
    lkapi: api.LiveKitAPI
    metrics: Metrics
    clock: Callable[[], float] = time.time
    _admitted: int = 0
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    # ------------------------------------------------------------------ placing

    async def place(self, call: OutboundCall) -> CallRecord:
        """Write the config durably, record the call, dispatch the agent, dial.

        Raises TooManyLiveCalls, ConfigWriteError or DatabaseError (nothing placed), or
        LiveKitError (the call is recorded as failed and its config record removed). Once
        LiveKit has accepted the call it is never reported as failed: a database error after
        that point is logged and the call answered as dialing, so no client retries a call
        that is already ringing.
        """
        # Reserve first, then count, with no lock: every call is counted at all times, in
        # `_admitted` until its row exists and in the database after (read in that order), so
        # concurrent requests may be refused at the margin but never exceed the cap.
        self._admitted += 1
        try:
            admitted = self._admitted
            if await self.db.count_live() + admitted > self.settings.calls_max_active:
                raise TooManyLiveCalls(self.settings.calls_max_active)
            call_id, record = await self._record_call(call)
        finally:
            self._admitted -= 1
        try:
            placed = await place_call(
                self.lkapi,
                self.settings,
                call_id=call_id,
                phone_number=call.phone_number,
                record=record,
            )
        except LiveKitError as exc:
            self.metrics.calls_placed.labels(result="failed").inc()
            logger.error("call %s could not be placed: %s", call_id, exc.reason)
            try:
                await self._settle(
                    call_id,
                    "placement_failed",
                    _fixed(Change(Status.FAILED, exc.reason)),
                    detail={"reason": exc.reason, "sip_status": exc.sip_status},
                )
            except DatabaseError as db_exc:  # the reaper settles the row once the db is back
                logger.error("call %s: could not record the failure: %s", call_id, db_exc)
            await self._forget_config(call_id)
            self._close_room_soon(call_id)
            raise
        self.metrics.calls_placed.labels(result="placed").inc()
        try:
            applied = await self.db.apply(
                call_id,
                "dialed",
                lambda _state: None,
                detail={
                    "dispatch_id": placed.dispatch_id,
                    "participant_id": placed.participant_id,
                },
            )
        except DatabaseError as exc:
            logger.error(
                "call %s is dialing but its dial details were not recorded: %s", call_id, exc
            )
            return self._dialing_record(call_id, call)
        if applied.after is None:  # the row was inserted above; only a lost database gets here
            logger.error("call %s is dialing but vanished from the calls database", call_id)
            return self._dialing_record(call_id, call)
        return applied.after

    def _dialing_record(self, call_id: str, call: OutboundCall) -> CallRecord:
        """What we know of a call LiveKit is dialing when the database cannot tell us more."""
        now = self.clock()
        return CallRecord(
            call_id=call_id,
            phone_number=call.phone_number,
            caller_name=call.name,
            language=call.language,
            emotion=call.emotion,
            status=Status.DIALING,
            outcome=None,
            reason=None,
            answered=False,
            hangup_requested=False,
            created_at=now,
            answered_at=None,
            ended_at=None,
            updated_at=now,
        )

    async def _record_call(self, call: OutboundCall) -> tuple[str, dict[str, Any]]:
        call_id = new_call_id()
        started = time.perf_counter()
        try:
            record = await self.store.update_async(
                call.name,
                call.dynamic_instruction,
                call.language,
                call.emotion,
                call.additional_params or None,
                call_id=call_id,
            )
        except ConfigWriteError:
            # A write that failed after its file replaced config.json (fsync of the
            # directory) left this refused call's record in it: take it out again.
            await self._forget_config_if_present(call_id)
            raise
        self.metrics.config_write_seconds.observe(time.perf_counter() - started)
        try:
            await self.db.insert_call(
                NewCall(call_id, call.phone_number, call.name, call.language, call.emotion),
                {"phone": mask_phone(call.phone_number)},
            )
        except DatabaseError:
            await self._forget_config(call_id)
            raise
        return call_id, record

    # ------------------------------------------------------------------ events

    async def handle_event(self, event: webhook.WebhookEvent) -> Applied | None:
        """Apply one verified webhook event to its call; None if it is not about our calls."""
        room = event.room.name if event.HasField("room") else ""
        if not room.startswith(CALL_ID_PREFIX):
            logger.debug("webhook %s %s is not about a call of ours", event.event, event.id)
            return None
        signal = signal_from_event(event)
        applied = await self._settle(
            room,
            event.event,
            lambda state: next_state(state, signal),
            event_id=event.id or None,
            detail=_signal_detail(signal),
        )
        if applied.unknown_call:
            logger.debug("webhook %s for unknown room %s ignored", event.event, room)
            return None
        if applied.duplicate:
            logger.debug("webhook %s (%s) already applied", event.id, event.event)
            return applied
        if event.event == "room_finished":
            await self._forget_config(room)
        return applied

    async def _settle(
        self,
        call_id: str,
        kind: str,
        decide: Decide,
        *,
        event_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Applied:
        applied = await self.db.apply(call_id, kind, decide, event_id=event_id, detail=detail)
        if applied.change is not None and applied.before and applied.after:
            after = applied.after
            logger.info(
                "call %s %s %s -> %s (%.0f s)%s",
                call_id,
                mask_phone(after.phone_number),
                applied.before.status.value,
                after.status.value,
                after.duration_s(self.clock()),
                f" [{applied.change.reason}]" if applied.change.reason else "",
            )
        return applied

    async def _forget_config_if_present(self, call_id: str) -> None:
        if not await aiofiles.os.path.exists(self.store.path):  # loading would create it
            return
        try:
            await self.store.load_async(call_id=call_id)
        except UnknownCallError:
            return
        except OSError:  # cannot tell: try the removal, which logs its own failure
            pass
        await self._forget_config(call_id)

    def _close_room_soon(self, call_id: str) -> None:
        """Best effort, off the request's path: delete the room of a call that failed to place.

        The dispatch may have started an agent, and after a dial timeout LiveKit may still be
        ringing the callee: deleting the room ends both. Failing here changes nothing.
        """

        async def close() -> None:
            try:
                await end_room(self.lkapi, call_id)
            except LiveKitError as exc:
                logger.warning("call %s: could not delete its room: %s", call_id, exc.reason)

        task = asyncio.get_running_loop().create_task(close(), name=f"close-room-{call_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Wait (briefly) for background room deletions before the LiveKit client closes."""
        if self._background:
            await asyncio.wait(set(self._background), timeout=5)
        for task in set(self._background):
            task.cancel()

    async def _forget_config(self, call_id: str) -> None:
        """Remove a call's config record; a failure here is logged, never fatal."""
        try:
            await self.store.remove_call_async(call_id)
        except OSError as exc:
            logger.error("could not remove config record of %s: %s", call_id, exc)

    # ------------------------------------------------------------------ hanging up

    async def hangup(self, call_id: str) -> tuple[HangupResult, CallRecord | None]:
        call = await self.db.get_call(call_id)
        if call is None:
            return HangupResult.UNKNOWN, None
        if call.is_final:
            return HangupResult.ALREADY_FINAL, call
        await self.db.request_hangup(call_id)
        if await end_room(self.lkapi, call_id):
            logger.info("call %s hang-up requested", call_id)
            return HangupResult.HANGING_UP, await self.db.get_call(call_id)
        # The room is already gone: no room_finished will come, settle now.
        await self._settle(
            call_id, "hangup", _fixed(Change(Status.CANCELED, "hung up through the API"))
        )
        await self._forget_config(call_id)
        return HangupResult.CANCELED, await self.db.get_call(call_id)

    # ------------------------------------------------------------------ reaping

    @property
    def stale_after_s(self) -> float:
        s = self.settings
        return s.call_ringing_timeout_s + s.call_max_duration_s + REAPER_MARGIN_S

    async def reap(self) -> int:
        """Settle calls stuck in a live status past any possible end as failed."""
        stale = await self.db.stale_live_calls(self.clock() - self.stale_after_s)
        for call_id in stale:
            await self._settle(call_id, "reaped", _fixed(Change(Status.FAILED, "no final event")))
            await self._forget_config(call_id)
        return len(stale)

    async def run_reaper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reaper_interval_s)
            try:
                await self.reap()
            except (DatabaseError, OSError) as exc:
                logger.error("reaper pass failed: %s", exc)


def _signal_detail(signal: Signal) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if signal.sip_participant:
        detail["sip_call_status"] = signal.sip_call_status
    if signal.disconnect_reason:
        detail["disconnect_reason"] = signal.disconnect_reason
    if signal.sip_status_code is not None:
        detail["sip_status"] = signal.sip_status_code
    if signal.room_outcome:
        detail["room_outcome"] = signal.room_outcome
    return detail
