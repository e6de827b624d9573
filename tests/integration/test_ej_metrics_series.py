"""/metrics as Prometheus reads it: each counter's known label values are there at 0 from
the start, so the first event after a (re)start is an increase.

Regression: `calls_placed_total{result="failed"}` and the like appeared only at their first
event, at 1; `increase()` and `rate()` see no increase in a series that starts at 1, and an
alert on `increase(webhooks_total{result="unverified"}[10m]) > 0` missed the first forged
webhook after every restart.
"""

from __future__ import annotations

import typing
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from common import metrics
from handlers import reports, webhooks
from tests.conftest import AppFactory

Client = TestClient[Any, Any]


async def _samples(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await client.get("/metrics")).text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_known_label_values_are_exported_at_zero_from_the_start(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    samples = await _samples(client)
    expected = {
        ("calls_placed_total", (("result", "failed"),)),
        ("calls_placed_total", (("result", "placed"),)),
        ("webhooks_total", (("result", "unverified"),)),
        ("webhooks_total", (("result", "applied"),)),
        ("agent_reports_total", (("result", "applied"),)),
        ("customer_webhook_deliveries_total", (("result", "failed"),)),
        ("call_events_total", (("type", "call.ended"),)),
        # A campaign's own events go through the same outbox, and were counted from their
        # first, at 1: an alert on campaigns paused (by the server, for a trunk's faults) saw
        # no increase in the first pause after a restart.
        ("call_events_total", (("type", "campaign.paused"),)),
        ("call_events_total", (("type", "campaign.completed"),)),
        ("calls_ended_total", (("status", "completed"),)),
        ("calls_ended_total", (("status", "failed"),)),
    }
    assert {key: samples.get(key) for key in expected} == dict.fromkeys(expected, 0.0)


async def test_the_first_forged_webhook_after_a_start_is_an_increase(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    key = ("webhooks_total", (("result", "unverified"),))
    before = (await _samples(client)).get(key)
    resp = await client.post(
        "/webhooks/livekit", data=b"{}", headers={"Authorization": "Bearer forged"}
    )
    assert resp.status == 401
    after = (await _samples(client)).get(key)
    assert (before, after) == (0.0, 1.0)


def test_the_handlers_results_are_all_known() -> None:
    """A result a handler may count is among those exported from the start."""
    assert set(typing.get_args(webhooks.Result)) <= set(metrics.WEBHOOK_RESULTS)
    outcome = typing.get_type_hints(reports._outcome)["return"]
    assert set(typing.get_args(outcome)) <= set(metrics.REPORT_RESULTS)


async def test_the_page_names_the_text_formats_version(start_app: AppFactory) -> None:
    """It said `text/plain; charset=utf-8`: Prometheus 3 chooses its parser by the
    Content-Type, and the text format's is `text/plain; version=0.0.4`."""
    client = await start_app()
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert resp.content_type == "text/plain" and resp.charset == "utf-8"
