"""`customer_webhook_latency_seconds` times a delivery from its event to its delivery, not a
redelivery by hand: `POST /deliveries/{id}/redeliver` of an event delivered three days ago
was observed as three days (259,200 s, past the last bucket), once per redelivery, and an
alert on the latency's 99th percentile paged for a customer's replay of its own events."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_customer_webhooks import place, settle, webhook_app
from tests.integration.test_customer_webhooks import receivers as receivers  # noqa: F401

Client = TestClient[Any, Any]
DAYS_3 = 3 * 86400


async def _deliveries(client: Client) -> tuple[float, float]:
    """Delivered attempts counted, and latencies observed."""
    text = await (await client.get("/metrics")).text()
    found = {
        (sample.name, sample.labels.get("result")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return (
        found[("customer_webhook_deliveries_total", "delivered")],
        found[("customer_webhook_latency_seconds_count", None)],
    )


async def test_a_redelivery_by_hand_is_not_timed_from_its_event(
    start_app: AppFactory, receivers: Any
) -> None:
    receiver = await receivers()
    client = await webhook_app(start_app, receiver.url, metrics_reuse_s=0.0, sandbox_time_scale=0.0)
    call_id = await place(client, SEED_EXAMPLES[0])
    await settle(client)
    delivered, timed = await _deliveries(client)
    assert delivered == timed > 0  # each first delivery timed
    path = client.app[SETTINGS].calls_db_path
    with contextlib.closing(sqlite3.connect(path)) as db, db:  # its events 3 days old
        db.execute("UPDATE outbox SET created_at = created_at - ?", (DAYS_3,))
    listed = (await (await client.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
    resp = await client.post(f"/deliveries/{listed[0]['id']}/redeliver")
    assert resp.status == 202
    await settle(client)
    assert len(receiver.got) == delivered + 1
    assert await _deliveries(client) == (delivered + 1, timed)  # sent, counted, not timed
