"""A customer webhook retry due while the server's clock steps back (NTP, a VM's clock set
right) waited for the step on top of its wait: its next attempt was dated by the clock before
the step, so a retry due 2 s later went an hour later, and the call's later events waited
behind it. The sender now sees the step (its clock's lead over the monotonic clock drops) and
counts the waits set before it from the clock after it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from handlers.keys import WEBHOOKS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, wait_for
from tests.integration.test_customer_webhooks import (
    Received,
    Receiver,
    place,
    wait_until,
    webhook_app,
)
from tests.integration.test_customer_webhooks import receivers as receivers  # noqa: F401

STEP_S = 3600.0


async def test_a_retry_set_before_the_clock_stepped_back_goes_on_time(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, receivers: Callable[..., Any]
) -> None:
    def first_refused(got: Received, n: int) -> tuple[int, float]:
        return (500, 0.0) if n == 1 else (204, 0.0)

    receiver = await receivers(answer=first_refused)
    await _retried_across_a_step_back(start_app, receiver, caplog)


async def _retried_across_a_step_back(
    start_app: AppFactory, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    client = await webhook_app(start_app, receiver.url, calls_webhook_retry_schedule=(0.0, 2.0))
    sender = client.app[WEBHOOKS]
    shift = {"s": 0.0}
    sender._clock = lambda: time.time() + shift["s"]
    call_id = await place(client, SEED_EXAMPLES[0])
    await wait_until(lambda: bool(receiver.attempts))

    async def refusal_recorded() -> bool:  # retried 2 s after it, by this clock
        listed = (await (await client.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
        return any(d["attempts"] >= 1 and d["last_error"] for d in listed)

    await wait_for(refusal_recorded, timeout=30)  # not a fixed 0.3 s a slow machine outlasts
    shift["s"] = -STEP_S  # the clock steps back an hour
    with caplog.at_level(logging.WARNING, logger="common.notify.deliveries"):
        # Due 2 s on (2.7 s for the whole test alone, beside three CPU burners too); the defect
        # held it an hour. 8 s ran out once near the end of a loaded six-worker suite.
        await wait_until(lambda: len(receiver.got) >= 1, timeout=30.0)
    first = next(iter(receiver.attempts))
    assert (receiver.got[0].webhook_id, receiver.attempts[first]) == (first, 2)
    assert "stepped back" in caplog.text
