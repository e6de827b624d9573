"""The campaign and do-not-call operations of `SqlCallStore`, over its `_run` (see sql.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from common.calls.models import AttemptRef, CallEvent, DncEntry, IdempotencyClaim
from common.campaigns.model import AttemptPlan, CampaignRecord, NewCampaign, RecipientRecord
from common.storage import campaign_programs as cp
from common.storage.campaign_programs import OnList
from common.storage.paging import Before
from common.storage.programs import Dialect, Program, add_dnc

T = TypeVar("T")


class CampaignMethods:
    """Mixed into SqlCallStore: implements `CampaignStore` (common/storage/base.py)."""

    dialect: Dialect
    instance: str
    lease_s: float
    enforce_calling_hours: bool  # CAMPAIGN_ENFORCE_CALLING_HOURS: what events' estimates count
    _clock: Callable[[], float]

    async def _run(self, program: Program[T], *, write: bool) -> T:
        raise NotImplementedError

    async def _read_aside(self, program: Program[T]) -> T:
        raise NotImplementedError

    async def _run_to_its_end(self, program: Program[T]) -> T:
        """A write whose request is answered only once it has ended, never while it may
        still commit: a campaign's row, which starts it (the SQLite store answers other
        writes that run too long 503, and they may land after)."""
        return await self._run(program, write=True)

    def _now(self, now: float | None) -> float:
        return self._clock() if now is None else now

    async def create_campaign(
        self,
        campaign: NewCampaign,
        now: float | None = None,
        claim: IdempotencyClaim | None = None,
        answer: dict[str, Any] | None = None,
        *,
        start_now: bool = False,
    ) -> list[CallEvent]:
        created = self._now(now)
        try:
            for first in range(0, len(campaign.recipients), cp.STAGE_ROWS):
                touched = self._clock()
                stage = cp.stage_recipients(
                    self.dialect,
                    campaign,
                    first,
                    created,
                    touched,
                    live_after=touched - cp.UPLOAD_GIVEN_UP_S,
                )
                await self._run(stage, write=True)
            live_after = self._clock() - cp.UPLOAD_GIVEN_UP_S
            program = cp.create_campaign(
                self.dialect,
                campaign,
                created,
                claim,
                answer,
                live_after=live_after,
                start_now=start_now,
                lease_s=self.lease_s,
                holder=self.instance,
                enforce_hours=self.enforce_calling_hours,
            )
            return await self._run_to_its_end(program)
        except BaseException:
            # What was stored is the reaper's to remove; the database failing, it takes them
            # as given up when UPLOAD_GIVEN_UP_S have passed.
            with contextlib.suppress(Exception):
                await self._run(cp.give_up_upload(self.dialect, campaign.campaign_id), write=True)
            raise

    async def discard_given_up_upload(self, before: float, limit: int) -> int:
        return await self._run(cp.discard_given_up_upload(self.dialect, before, limit), write=True)

    async def get_campaign(self, campaign_id: str) -> CampaignRecord | None:
        return await self._read_aside(cp.get_campaign(self.dialect, campaign_id))

    async def campaign_exists(self, campaign_id: str) -> bool:
        return await self._run(cp.campaign_exists(self.dialect, campaign_id), write=False)

    async def list_campaigns(
        self, *, limit: int = 50, before: Before | None = None
    ) -> list[CampaignRecord]:
        return await self._read_aside(cp.list_campaigns(self.dialect, limit, before))

    async def claim_campaigns(
        self, now: float, lease_s: float, limit: int
    ) -> tuple[list[CampaignRecord], list[CallEvent]]:
        return await self._run(
            cp.claim_campaigns(
                self.dialect, now, lease_s, self.instance, limit, self.enforce_calling_hours
            ),
            write=True,
        )

    async def follow_default_webhook_url(self, url: str) -> int:
        program = cp.follow_default_webhook_url(self.dialect, url, self._clock())
        return await self._run(program, write=True)

    async def release_campaigns(self) -> None:
        await self._run(cp.release_campaigns(self.dialect, self.instance), write=True)

    async def control_campaign(
        self, campaign_id: str, action: str, now: float | None = None
    ) -> tuple[CampaignRecord | None, list[CallEvent]]:
        return await self._run(
            cp.control_campaign(
                self.dialect,
                campaign_id,
                action,
                self._now(now),
                self.lease_s,
                self.instance,
                self.enforce_calling_hours,
            ),
            write=True,
        )

    async def complete_if_done(self, campaign_id: str, now: float) -> list[CallEvent]:
        return await self._run(
            cp.complete_if_done(
                self.dialect,
                campaign_id,
                now,
                self.lease_s,
                self.instance,
                self.enforce_calling_hours,
            ),
            write=True,
        )

    async def pull_back_after_step(self, campaign_id: str, now: float) -> int:
        return await self._run(cp.pull_back_after_step(self.dialect, campaign_id, now), write=True)

    async def due_recipients(self, campaign_id: str, now: float, limit: int) -> cp.DueRecipients:
        return await self._run(
            cp.due_recipients(self.dialect, campaign_id, now, limit), write=False
        )

    async def set_aside_recipients(self, campaign_id: str, idxs: Sequence[int], now: float) -> int:
        return await self._run(
            cp.set_aside_recipients(self.dialect, campaign_id, idxs, now), write=True
        )

    async def next_due_at(self, campaign_id: str) -> float | None:
        return await self._run(cp.next_due_at(self.dialect, campaign_id), write=False)

    async def defer_recipient(
        self,
        campaign_id: str,
        idx: int,
        state: str,
        until: float,
        now: float,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        await self._run(
            cp.defer_recipient(self.dialect, campaign_id, idx, state, until, now, errors),
            write=True,
        )

    async def list_recipients(
        self, campaign_id: str, *, state: str | None, limit: int, after: int | None
    ) -> list[RecipientRecord]:
        return await self._read_aside(
            cp.list_recipients(self.dialect, campaign_id, state, limit, after)
        )

    async def begin_attempt(
        self, campaign_id: str, idx: int, next_dial_at: float, now: float
    ) -> AttemptPlan | OnList | None:
        return await self._run(
            cp.begin_attempt(self.dialect, campaign_id, idx, self.instance, next_dial_at, now),
            write=True,
        )

    async def open_attempts(self, campaign_id: str) -> tuple[int, list[AttemptRef]]:
        return await self._run(cp.open_attempts(self.dialect, campaign_id), write=False)

    async def attempt_refused(self, ref: AttemptRef, retry_at: float | None, now: float) -> None:
        await self._run(cp.attempt_refused(self.dialect, ref, retry_at, now), write=True)

    async def end_attempt(
        self,
        ref: AttemptRef,
        status: str,
        now: float,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> list[CallEvent]:
        return await self._run(
            cp.end_attempt(
                self.dialect,
                ref,
                status,
                now,
                self.lease_s,
                self.instance,
                errors=errors,
                enforce_hours=self.enforce_calling_hours,
            ),
            write=True,
        )

    async def finish_call_attempt(
        self, call_id: str, status: str, now: float, *, enforce_hours: bool = True
    ) -> list[CallEvent]:
        program = cp.finish_call_attempt(
            self.dialect, call_id, status, now, self.lease_s, self.instance, enforce_hours
        )
        return await self._run(program, write=True)

    # -- do not call ---------------------------------------------------------------------

    async def add_dnc(self, numbers: list[str], source: str, call_id: str | None = None) -> int:
        return await self._run(
            add_dnc(self.dialect, numbers, source, call_id, self._now(None)), write=True
        )

    async def remove_dnc(self, number: str) -> bool:
        return await self._run(cp.remove_dnc(self.dialect, number), write=True)

    async def get_dnc(self, number: str) -> DncEntry | None:
        return await self._run(cp.get_dnc(self.dialect, number), write=False)

    async def list_dnc(self, *, limit: int = 100, after: str | None = None) -> list[DncEntry]:
        return await self._read_aside(cp.list_dnc(self.dialect, limit, after))
