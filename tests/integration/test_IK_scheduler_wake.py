"""A wake of the campaign scheduler (a campaign created or resumed, a cancel) that came while
its claim ran was cleared once the claim ended: that campaign waited for the next tick (a
second) for its first call, though the claim before had not seen it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from handlers.keys import CAMPAIGNS
from tests.conftest import AppFactory
from tests.helpers import wait_for


async def test_a_wake_during_a_claim_claims_again_at_once(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app()
    scheduler = client.app[CAMPAIGNS].scheduler
    scheduler.tick_s = 60.0  # (a second by default: a tick apart from a wake)
    store = scheduler._store
    claim = store.claim_campaigns
    claims: list[float] = []

    async def woken_meanwhile(*args: Any, **kwargs: Any) -> Any:
        claims.append(time.monotonic())
        claimed = await claim(*args, **kwargs)
        if len(claims) == 1:
            scheduler.wake()  # as POST /campaigns does, its row committed after this read
        return claimed

    monkeypatch.setattr(store, "claim_campaigns", woken_meanwhile)
    scheduler.wake()

    async def claimed_again() -> bool:
        return len(claims) >= 2

    await wait_for(claimed_again, timeout=20)
