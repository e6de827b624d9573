"""`calls_ended_total` and `call_events_total` count each event once. A subscriber that kept
failing an event (RETRY_TRIES times) leaves it to the take-over, which gives it to every
subscriber again once its claim runs out, at least once as it must: the metrics' subscriber
counted it again, by the server that took it over. One completed call read as two in
`calls_ended_total{status="completed"}`, on that server or summed over two servers on one
database (a database down for 20 s fails the customer webhooks' subscriber so for every
event of its backlog: each counted twice)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from common.calls.events import CALL_ENDED, RETRY_TRIES
from common.calls.models import CallEvent
from handlers.keys import EVENTS
from tests.conftest import AppFactory
from tests.helpers import wait_for

Client = TestClient[Any, Any]
ENDED = ("calls_ended_total", "completed")
ENDED_EVENTS = ("call_events_total", "call.ended")


async def _counts(client: Client) -> dict[tuple[str, str], float]:
    text = await (await client.get("/metrics")).text()
    return {
        (sample.name, value): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }


def _failing_each_end(client: Client) -> list[int]:
    """A subscriber failing every call.ended RETRY_TRIES times (then taking it); the ids of
    what it was given."""
    given: list[int] = []

    async def broken(event: CallEvent) -> None:
        if event.type == CALL_ENDED:
            given.append(event.id)
            if given.count(event.id) <= RETRY_TRIES:
                raise RuntimeError("a defect")

    events = client.app[EVENTS]
    events._retry_s = 0.01
    events.subscribe("broken", broken)
    return given


async def _ended_and_failed(client: Client, given: list[int]) -> None:
    resp = await client.post("/calls/outbound", json={"phone_number": "+14155557700"})
    assert resp.status == 200, await resp.text()
    tries = len(given) + RETRY_TRIES

    async def failed_enough() -> bool:
        return len(given) >= tries

    await wait_for(failed_enough, timeout=10)
    await client.app[EVENTS].wait_idle()


async def _taken_over_by(client: Client, given: list[int]) -> None:
    """Its claim run out (the clock of `client`'s dispatcher 2 leases on), taken over."""
    events = client.app[EVENTS]
    events._clock = lambda: time.time() + 120
    assert await events.recover() == 1
    await events.wait_idle()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_an_event_taken_over_is_counted_once(start_app_on: AppFactory) -> None:
    fast = {"sandbox_time_scale": 0.0, "metrics_reuse_s": 0.0}
    first = await start_app_on(**fast)
    second = await start_app_on(**fast)
    given = _failing_each_end(first)

    await _ended_and_failed(first, given)
    await _taken_over_by(first, given)  # by its own server
    assert len(given) == RETRY_TRIES + 1
    assert [(await _counts(first))[key] for key in (ENDED, ENDED_EVENTS)] == [1.0, 1.0]

    await _ended_and_failed(first, given)
    await _taken_over_by(second, given)  # by another server on the database
    counted = [await _counts(client) for client in (first, second)]
    assert [sum(c[key] for c in counted) for key in (ENDED, ENDED_EVENTS)] == [2.0, 2.0]
