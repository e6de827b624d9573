"""A campaign paused before its start_at and resumed after it is running from the resume,
with its campaign.started, as one created with a start_at past is: the resume answered
`scheduled` (and GET said so until the scheduler's next tick) for a campaign whose start_at
had passed, which the README calls running. Resumed before its start_at, it is still
scheduled, and starts at its start_at."""

from __future__ import annotations

import dataclasses

from common.storage.base import CallStore
from tests.contract.test_campaign_store import campaign
from tests.helpers import FakeClock


async def test_resumed_after_its_start_at_it_runs_from_the_resume(
    store: CallStore, clock: FakeClock
) -> None:
    start_at = clock.now + 60
    await store.create_campaign(dataclasses.replace(campaign(2), start_at=start_at), clock.now)
    await store.control_campaign("cmp-1", "pause", clock.now)
    resumed, events = await store.control_campaign("cmp-1", "resume", clock.now)
    assert resumed is not None and resumed.status.value == "scheduled"  # before its start_at
    assert resumed.started_at is None
    assert [e.type for e in events] == ["campaign.resumed"]
    await store.control_campaign("cmp-1", "pause", clock.now)
    clock.advance(120)
    resumed, events = await store.control_campaign("cmp-1", "resume", clock.now)
    assert resumed is not None and resumed.status.value == "running"
    assert resumed.started_at == clock.now
    assert [e.type for e in events] == ["campaign.started", "campaign.resumed"]
    assert [e.data["status"] for e in events] == ["running", "running"]
    shown = await store.get_campaign("cmp-1")
    assert shown is not None and shown.status.value == "running"
    # The scheduler drives it, and does not start it a second time.
    claimed, started = await store.claim_campaigns(clock.now, 10.0, 10)
    assert [c.campaign_id for c in claimed] == ["cmp-1"]
    assert started == []
