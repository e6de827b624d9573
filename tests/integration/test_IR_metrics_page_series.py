"""/metrics carries the series README lists, not a creation-time gauge beside each counter
and histogram: prometheus_client added `calls_placed_created{result="placed"} 1.79e+09`
(HELP "Calls handed to LiveKit") and 42 more, a third of the page, which the text format
stores as series of their own."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AppFactory


async def test_no_creation_time_series(start_app: AppFactory) -> None:
    client = await start_app()
    text = await (await client.get("/metrics")).text()
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert "calls_placed_total" in names
    assert sorted(name for name in names if name.endswith("_created")) == []
