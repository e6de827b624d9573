"""A call's `call.ended` given to the subscribers again (a subscriber failed it RETRY_TRIES
times, so its lease ran out and the dispatcher took it over, giving it to every subscriber
again, as it must: at least once) was counted again by the runs' counters: one busy call
counted as two busy calls in a row."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from common.calls.events import CALL_ENDED, RETRY_TRIES, EventDispatcher
from common.calls.models import CallEvent
from common.calls.service import warn_of_busy_runs
from common.campaigns.service import CampaignService, pause_on_agent_faults
from common.repeats import Repeats
from common.storage.sql import DEFAULT_LEASE_S as LEASE_S
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock, wait_for
from tests.unit.test_events import _placed_and_ended


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteCallStore]:
    opened = await SqliteCallStore.open(tmp_path / "calls.db", FakeClock())
    yield opened
    await opened.close()


async def test_an_ended_call_given_again_is_counted_once(
    store: SqliteCallStore, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    tries: list[str] = []

    async def broken(event: CallEvent) -> None:  # fails each event RETRY_TRIES times
        tries.append(event.type)
        if len(tries) <= RETRY_TRIES * 2:
            raise RuntimeError("a defect")

    dispatcher = EventDispatcher(store, clock, retry_s=0.01)
    dispatcher.subscribe("busy runs", warn_of_busy_runs(Repeats(), least=2))
    dispatcher.subscribe("broken", broken)
    dispatcher.start()
    try:
        dispatcher.publish(await _placed_and_ended(store, "call-1"))  # dialing, then busy

        async def given_up() -> bool:
            return len(tries) == RETRY_TRIES * 2

        await wait_for(given_up, timeout=10)
        await asyncio.sleep(0.05)
        clock.advance(LEASE_S + 1)
        assert await dispatcher.recover() == 2  # given to every subscriber again
        await dispatcher.wait_idle()
    finally:
        await dispatcher.stop()
    said = [r for r in caplog.records if r.levelno == logging.WARNING and "ended busy" in r.message]
    assert said == []  # one busy call, not two in a row


async def test_a_campaign_calls_fault_given_again_is_counted_once() -> None:
    """The campaigns' pause on their calls' faults counts as the runs' counters do: one call
    ended by its agent's failure, given again by the take-over, paused a campaign set to
    pause after 2 such calls in a row."""
    paused: list[str] = []

    class Campaigns:
        async def control(self, campaign_id: str, action: str) -> None:
            paused.append(campaign_id)

    pause = pause_on_agent_faults(cast(CampaignService, Campaigns()), 2)
    data = {"campaign_id": "cmp-1", "status": "failed", "reason": "the agent failed: boom"}
    event = CallEvent(7, "call-1", CALL_ENDED, data, 0.0)
    await pause(event)
    await pause(event)  # the same event, given again
    assert paused == []
    await pause(CallEvent(8, "call-2", CALL_ENDED, data, 0.0))  # a second call: two in a row
    assert paused == ["cmp-1"]
