"""Status changes reach subscribers through the outbox: every call of the seed's examples
gives its events, in order, to a subscriber of the running app (as customer webhooks and
campaigns will subscribe), and the metrics subscriber counts them."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from common.calls.models import CallEvent
from handlers.keys import EVENTS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES

Client = TestClient[Any, Any]


async def test_each_call_gives_its_events_in_order(start_app: AppFactory) -> None:
    client = await start_app()
    seen: list[CallEvent] = []

    async def subscriber(event: CallEvent) -> None:
        seen.append(event)

    client.app[EVENTS].subscribe("test", subscriber)
    busy = dict(SEED_EXAMPLES[0], phone_number="+14155550486")
    ids = []
    for body in [*SEED_EXAMPLES, busy]:
        resp = await client.post("/calls/outbound", json=body)
        ids.append((await resp.json())["call_id"])
    await client.app[SANDBOX].wait_idle(10)
    await client.app[EVENTS].wait_idle()

    def types(call_id: str) -> list[str]:
        return [e.type for e in seen if e.call_id == call_id and e.type != "call.report"]

    for call_id in ids[:3]:
        assert types(call_id) == ["call.dialing", "call.answered", "call.ended"]
    assert types(ids[3]) == ["call.dialing", "call.ended"]
    # The agent's final report (the sandbox plays it) is an event of every call, once.
    assert sorted(e.call_id for e in seen if e.type == "call.report") == sorted(ids)
    ended = [e for e in seen if e.type == "call.ended"]
    assert sorted(e.data["status"] for e in ended) == ["busy"] + ["completed"] * 3
    assert all(e.data["call_id"] == e.call_id for e in seen)

    metrics = await (await client.get("/metrics")).text()
    assert 'call_events_total{type="call.ended"} 4.0' in metrics
    assert 'calls_ended_total{status="completed"} 3.0' in metrics
