"""A campaign while LiveKit is over a limit of its own (429 `resource_exhausted`: too many
concurrent SIP calls for the plan, a rate limit on the project).

Each driver went on at its pacing: every slot a dispatch LiveKit refused (a call recorded
`failed`, its customer webhooks sent), every recipient's attempt `not_dialled` in turn, each
tried again on its own backoff; after MAX_NOT_DIALLED of them (about half an hour at real
speed) every recipient was `failed`, nobody called, and the campaign `completed`. Now
LiveKit's over-limit answer holds every campaign's placing for the wait it asked (else a
few seconds, doubling while it lasts): a throttle costs a few tries, not every recipient.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from common.campaigns import scheduler as campaign_scheduler
from common.storage import campaign_programs
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock
from tests.integration.test_campaigns import FAST, all_recipients, create, wait_status

RECIPIENTS = [{"phone_number": f"+1415200770{i}", "name": f"R{i}"} for i in range(3)]


async def test_a_throttle_holds_the_campaign_rather_than_failing_its_recipients(
    start_app: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Time scaled down: a not-dialled attempt is due again 0.05 s later (at most 0.2 s), and
    # a recipient is failed after 5 (10 over about half an hour at real speed); LiveKit's
    # limit lasts 8 s.
    monkeypatch.setattr(campaign_programs, "NOT_DIALLED_RETRY_S", 0.05)
    monkeypatch.setattr(campaign_programs, "NOT_DIALLED_MAX_DELAY_S", 0.2)
    monkeypatch.setattr(campaign_programs, "MAX_NOT_DIALLED", 5)
    monkeypatch.setattr(campaign_scheduler, "LIVEKIT_HOLD_S", 0.3, raising=False)
    client = await start_app(
        sandbox_time_scale=0.0, campaign_clock=ShiftedClock(OPEN_EVERYWHERE), **FAST
    )
    sandbox = client.app[SANDBOX]
    until = time.monotonic() + 8.0

    def limited(_body: dict[str, Any]) -> bool:
        return time.monotonic() < until

    sandbox.inject(
        "CreateDispatch",
        # As far as a LiveKit Cloud is: the refusal's settle freed the campaign's slot before
        # the hold was set, and a second request went out each hold (9-10 refused, not 5).
        delay_s=0.1,
        error=TwirpError("resource_exhausted", "too many concurrent SIP calls"),
        when=limited,
    )
    created = await create(
        client,
        {
            "name": "throttled",
            "recipients": RECIPIENTS,
            "pacing": {"calls_per_second": 20, "max_concurrent": 1},
        },
    )
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    refused = [r for r in sandbox.requests if r.method == "CreateDispatch"]
    await wait_status(client, created["campaign_id"], "completed", timeout=60)

    rows = await all_recipients(client, created["campaign_id"])
    assert [row["state"] for row in rows] == ["completed"] * 3  # were all `failed`
    dialled = sorted(d.number for d in sandbox.dials)
    assert dialled == sorted(r["phone_number"] for r in RECIPIENTS)  # each called once
    # Held 0.3, 0.6, 1.2, 2.4, 4.8 s: one refused a hold, not one each slot (about 25).
    assert len(refused) <= 8, len(refused)
    assert "campaigns: LiveKit is over a limit of its own" in caplog.text
    assert caplog.text.count("campaigns: LiveKit is over a limit") == 1  # once a minute
