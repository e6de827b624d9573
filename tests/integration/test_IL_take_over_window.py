"""The take-over of a dead server's events (on the dispatcher's own timer) ran from the
dispatcher's start to its stop: before the campaign scheduler subscribed as the server
started, and after it stopped as the server stopped. Taken over before, a campaign call's
call.ended was given to every subscriber but the campaigns' and marked dispatched: its attempt
never ended (its recipient `calling` for good, the campaign never over). Taken over during the
stop, the events were held from the other servers a lease while this one stopped dispatching.
The reaper's pass did it before: from the first pass (every subscriber there) to its stop."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

import server
from common.calls.models import CallEvent, NewCall
from common.calls.service import CallService
from common.campaigns.scheduler import CampaignScheduler
from handlers.keys import CALLS, EVENTS
from tests.conftest import AppFactory
from tests.helpers import wait_for


async def test_no_take_over_before_the_campaigns_subscribe(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app()
    calls = client.app[CALLS]
    created = await calls.store.create_call(NewCall("call-dead", "+14155550100", "A", "en", "Calm"))
    event_id = created.events[0].id
    path = calls.settings.calls_db_path
    await client.close()
    with sqlite3.connect(path) as db:  # its server died, its lease ran out
        db.execute(
            "UPDATE outbox SET dispatched_at = NULL, claimed_until = 1,"
            " claimed_by = 'dead:8000@gone' WHERE id = ?",
            (event_id,),
        )
    seen: list[int] = []
    on_event = CampaignScheduler.on_event

    async def campaigns_see(self: CampaignScheduler, event: CallEvent) -> None:
        seen.append(event.id)
        await on_event(self, event)

    monkeypatch.setattr(CampaignScheduler, "on_event", campaigns_see)
    follow = server._follow_default_webhook_url

    async def slow_database(*args: Any) -> None:  # a start-up step between the two, slow
        await asyncio.sleep(0.5)
        await follow(*args)

    monkeypatch.setattr(server, "_follow_default_webhook_url", slow_database)
    await start_app(reaper_interval_s=0.02)

    async def dispatched() -> bool:
        with sqlite3.connect(path) as db:
            row = db.execute("SELECT dispatched_at FROM outbox WHERE id = ?", (event_id,))
            return bool(row.fetchone()[0])

    await wait_for(dispatched, timeout=10)
    assert event_id in seen, seen  # (its call settled at the start: its own call.ended too)


async def test_no_take_over_once_the_reaper_stopped(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app(reaper_interval_s=0.02)
    calls, events = client.app[CALLS], client.app[EVENTS]
    claims = 0
    claim = calls.store.claim_stale_events

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)

    monkeypatch.setattr(calls.store, "claim_stale_events", counted)

    async def taking_over() -> bool:
        return claims > 0

    await wait_for(taking_over, timeout=10)
    settle_at_stop = CallService.settle_at_stop
    during_stop: list[int] = []

    async def slow_stop(self: CallService) -> int:  # the stop's steps after the reaper's
        before = claims
        await asyncio.sleep(0.3)
        during_stop.append(claims - before)
        return await settle_at_stop(self)

    monkeypatch.setattr(CallService, "settle_at_stop", slow_stop)
    await client.close()
    assert during_stop == [0]
    assert events._recovering is None
