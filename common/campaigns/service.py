"""Campaigns on our side: create one from validated options and rows, show it, control it.

The HTTP handlers only read the body (JSON or CSV) and shape the answers around this.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from common.calls.errors import FieldError, InvalidCall
from common.calls.events import CALL_ENDED, EventDispatcher
from common.calls.models import CallEvent, IdempotencyClaim
from common.calls.request import RequestRules
from common.calls.runs import Recent
from common.calls.service import (
    check_webhook_address,
    ended_at_the_trunk,
    ended_by_the_agents_failure,
)
from common.campaigns.csv_rows import RowError
from common.campaigns.errors import InvalidRows, UnknownCampaign
from common.campaigns.model import (
    CAMPAIGN_COMPLETED,
    CampaignRecord,
    NewCampaign,
    RecipientRecord,
)
from common.campaigns.request import (
    MAX_RECIPIENTS,
    CampaignOptions,
    Row,
    RowChecker,
    invalid_rows_answer,
    refused,
    rows_of,
)
from common.campaigns.scheduler import CampaignScheduler
from common.masking import redact
from common.settings import Settings
from common.storage.base import CallStore, CommitUnknown, DatabaseError
from common.storage.campaign_programs import CampaignConflict
from common.turns import Turns

logger = logging.getLogger(__name__)


async def log_campaign_completed(event: CallEvent) -> None:
    """A campaign whose last recipient ended: said, with how its recipients ended. Its start
    and its pauses, resumes and cancel were said as they came; its end, by nothing."""
    if event.type != CAMPAIGN_COMPLETED:
        return
    data = event.data
    counts = data.get("counts")
    ended = (
        ", ".join(f"{count} {state}" for state, count in counts.items() if count)
        if isinstance(counts, dict)
        else ""
    )
    logger.info(
        "campaign %s (%s) completed: %s",
        event.call_id,
        redact(str(data.get("name"))),
        ended or "no recipients",
    )


def pause_on_trunk_faults(
    campaigns: CampaignService, least: int
) -> Callable[[CallEvent], Coroutine[Any, Any, None]]:
    """Pause a campaign whose calls ended `least` times in a row with a failure that blames
    the outbound trunk (`trunk_fault`: credentials, account, the carrier or the line to it):
    a trunk its carrier refuses failed every recipient of a list at the campaign's pace, each
    `failed` for good, while the trunk-fault WARNING came once a minute. Counted per campaign
    over the calls this server settles; any other end starts the count again."""
    return _pause_on_runs(
        campaigns,
        least,
        ended_at_the_trunk,
        "failed at the trunk",
        "the outbound trunk SIP_OUTBOUND_TRUNK_ID names works",
    )


def pause_on_agent_faults(
    campaigns: CampaignService, least: int
) -> Callable[[CallEvent], Coroutine[Any, Any, None]]:
    """Pause a campaign whose calls ended `least` times in a row by their agent's failure
    (`ended_by_the_agents_failure`: a provider refusing its key, its credits or quota spent,
    down): each callee answered to silence (or to half a conversation) and a hang-up, and
    every recipient of the list was called so at the campaign's pace. Counted as the trunk's
    faults are (`pause_on_trunk_faults`)."""
    return _pause_on_runs(
        campaigns,
        least,
        ended_by_the_agents_failure,
        "ended by their agent's failure",
        "the agent's providers work",
    )


def _pause_on_runs(
    campaigns: CampaignService,
    least: int,
    fault_of: Callable[[CallEvent], str | None],
    failed: str,
    until: str,
) -> Callable[[CallEvent], Coroutine[Any, Any, None]]:
    """Pause a campaign whose calls ended `least` times in a row with a fault `fault_of`
    names (what to check), with a WARNING saying its calls `failed` so, the last, what to
    check, and to resume it once `until`. Counted per campaign over the calls this server
    settles; any other end starts the count again; an event given again (the dispatcher's
    take-over) is not counted again."""
    runs: dict[str, int] = {}
    seen = Recent[int]()

    async def pause(event: CallEvent) -> None:
        campaign_id = event.data.get("campaign_id")
        if event.type != CALL_ENDED or not isinstance(campaign_id, str):
            return
        if not seen.first(event.id):
            return
        fault = fault_of(event)
        if fault is None:
            runs.pop(campaign_id, None)
            return
        runs[campaign_id] = runs.get(campaign_id, 0) + 1
        if runs[campaign_id] < least:
            return
        del runs[campaign_id]
        try:
            await campaigns.control(campaign_id, "pause")
        except (CampaignConflict, UnknownCampaign):
            return  # paused, canceled or over meanwhile
        except DatabaseError as exc:
            logger.error(
                "campaign %s: could not pause it (its calls %s): %s", campaign_id, failed, exc
            )
            return
        logger.warning(
            "campaign %s paused: its last %d calls %s (the last, call %s: %s; %s); resume it"
            " (POST /campaigns/%s/resume) once %s",
            campaign_id,
            least,
            failed,
            event.call_id,
            event.data.get("reason"),
            fault,
            campaign_id,
            until,
            extra={"campaign_id": campaign_id, "call_id": event.call_id},
        )

    return pause


CAMPAIGN_ID_PREFIX = "cmp-"
# After a commit whose answer was lost: how long the campaign's row is asked for, how often.
COMMIT_CHECK_S = 5.0
COMMIT_CHECK_POLL_S = 0.25
# Rows' own webhook_url hosts are resolved at creation, this many at once, at most this many
# distinct ones in a campaign (each lookup may take its 3 s bound).
WEBHOOK_LOOKUPS_AT_ONCE = 8
MAX_WEBHOOK_HOSTS = 100


def new_campaign_id() -> str:
    return f"{CAMPAIGN_ID_PREFIX}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class Created:
    campaign: CampaignRecord
    invalid_rows: list[RowError]


@dataclass
class CampaignService:
    settings: Settings
    store: CallStore
    events: EventDispatcher
    scheduler: CampaignScheduler
    clock: Callable[[], float] = time.time

    async def create(
        self,
        options: CampaignOptions,
        rows: Iterable[Row],
        client: str,
        parse_errors: list[RowError] | None = None,
        claim: IdempotencyClaim | None = None,
    ) -> Created:
        """Validate every row (as the single call it becomes), then store the campaign and
        its recipients (a batch a transaction, the campaign seen once all are in, with
        `claim`'s Idempotency-Key bound to it: KeyTaken if it is bound already).
        InvalidRows when rows were refused and the options reject them, or when no row is
        valid."""
        now = self.clock()
        rules = RequestRules.of(self.settings)
        checker = RowChecker(
            options.spec,
            rules,
            max(options.start_at or now, now),
            enforce_hours=self.settings.campaign_enforce_calling_hours,
        )
        count = 0
        turns = Turns()  # a large list never stalls the calls in flight, nor the database
        for row in rows:
            count += 1
            if count > MAX_RECIPIENTS:
                raise InvalidRows([], f"more than {MAX_RECIPIENTS} recipients", [])
            checker.check(row, keep_invalid=options.skip_invalid)
            await turns.take()
        await self._check_row_webhooks(checker)
        for _ in checker.drop_repeats():
            await turns.take()
        errors = sorted([*(parse_errors or []), *checker.errors], key=lambda e: e.row)
        if errors and not options.skip_invalid:
            raise InvalidRows(
                errors,
                f"{rows_of(errors)} invalid row(s); fix them, or send invalid_rows=skip",
                refused(errors),
            )
        if count == 0:  # a CSV of its header alone (a JSON list is never empty here)
            raise InvalidRows([], "no recipient: the list has a header but no rows", [])
        if checker.valid == 0:
            raise InvalidRows(errors, "no valid recipient", refused(errors))
        webhook_url = options.spec.defaults.get("webhook_url") or self.settings.calls_webhook_url
        if options.spec.defaults.get("webhook_url"):
            await _check_default_webhook(str(webhook_url), self.settings)
        campaign_id = new_campaign_id()
        start_at = options.start_at if options.start_at is not None else now
        try:
            events = await self.store.create_campaign(
                NewCampaign(
                    campaign_id=campaign_id,
                    name=options.name,
                    client=client,
                    spec=options.spec,
                    start_at=start_at,
                    webhook_url=webhook_url,
                    recipients=checker.recipients,
                ),
                now,
                claim,
                invalid_rows_answer(errors),
                start_now=start_at <= now,  # running from now: not `scheduled` until a tick
            )
        except CommitUnknown:
            # Written after all, it runs and dials: answered 503, a retry without an
            # Idempotency-Key made a second campaign, and every recipient was called twice.
            if not await self._created_after_all(campaign_id):
                raise
            logger.warning(
                "campaign %s: it was stored though the commit's answer was lost; it runs",
                campaign_id,
            )
            events = []  # its campaign.started waits in the outbox until its claim runs out
        self.events.publish(events)
        logger.info(
            "campaign %s (%s) created: %d recipient(s)%s",
            campaign_id,
            redact(options.name),
            checker.valid,
            f", {rows_of(errors)} invalid row(s) skipped" if errors else "",
        )
        self.scheduler.wake()
        return Created(await self.get(campaign_id), errors)

    async def _check_row_webhooks(self, checker: RowChecker) -> None:
        """Rows' own webhook_url hosts resolve to public addresses, as a single call's must
        (each distinct host once, a few at a time); the rows of a host that does not pass are
        invalid, with the single call's message."""
        by_host: dict[str, list[tuple[int, str, str]]] = {}
        for idx, prefix, url in checker.row_webhooks:
            by_host.setdefault(URL(url).host or "", []).append((idx, prefix, url))
        if len(by_host) > MAX_WEBHOOK_HOSTS:
            raise InvalidRows([], f"rows name more than {MAX_WEBHOOK_HOSTS} webhook_url hosts", [])
        lookups = asyncio.Semaphore(WEBHOOK_LOOKUPS_AT_ONCE)

        async def refusal(url: str) -> str | None:
            async with lookups:
                try:
                    await check_webhook_address(url, self.settings)
                except InvalidCall as exc:
                    return exc.errors[0].error
                return None

        hosts = list(by_host.values())
        refusals = await asyncio.gather(*(refusal(rows[0][2]) for rows in hosts))
        for rows, error in zip(hosts, refusals, strict=True):
            if error is None:
                continue
            for idx, prefix, _url in rows:
                row_number = checker.recipients[idx].row_number
                checker.refuse(idx, RowError(row_number, f"{prefix}webhook_url", error))

    async def _created_after_all(self, campaign_id: str) -> bool:
        """After a commit whose answer was lost: is the campaign's row there? Asked until the
        database answers, for COMMIT_CHECK_S at most; False if it never does."""
        deadline = time.monotonic() + COMMIT_CHECK_S
        while True:
            try:
                return await self.store.get_campaign(campaign_id) is not None
            except DatabaseError:
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(COMMIT_CHECK_POLL_S)

    async def get(self, campaign_id: str) -> CampaignRecord:
        campaign = await self.store.get_campaign(campaign_id)
        if campaign is None:
            raise UnknownCampaign(campaign_id)
        return campaign

    async def control(self, campaign_id: str, action: str) -> CampaignRecord:
        """pause, resume or cancel (CampaignConflict if its status does not allow it)."""
        campaign, events = await self.store.control_campaign(campaign_id, action, self.clock())
        if campaign is None:
            raise UnknownCampaign(campaign_id)
        self.events.publish(events)
        logger.info("campaign %s: %s -> %s", campaign_id, action, campaign.status.value)
        self.scheduler.wake()
        return campaign

    async def recipients(
        self, campaign_id: str, *, state: str | None, limit: int, after: int | None
    ) -> list[RecipientRecord]:
        # By its row alone: `get` counts every recipient by state (a 100,000-recipient
        # campaign: 41 ms a page, paging through it 100 at a time 40 s), for counts no page
        # shows.
        if not await self.store.campaign_exists(campaign_id):
            raise UnknownCampaign(campaign_id)
        return await self.store.list_recipients(campaign_id, state=state, limit=limit, after=after)


async def _check_default_webhook(url: str, settings: Settings) -> None:
    """`defaults.webhook_url` resolves to public addresses only; its errors name it so (the
    single call's check names `webhook_url`, a field the campaign's body does not have)."""
    try:
        await check_webhook_address(url, settings)
    except InvalidCall as exc:
        named = [FieldError(f"defaults.{e.field}", e.error) for e in exc.errors]
        raise type(exc)(named) from None
