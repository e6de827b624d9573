"""/metrics before the database's counts were ever read: what is not known is absent, not 0.

Regression: a server whose database stopped answering before its first scrape's count
(PostgreSQL's calls table locked by a migration, a frozen host) answered
`customer_webhook_deliveries_pending 0.0`, no backlog, for what it had never read; a backlog
alert resolved on it. `calls{status}` was already absent then.
"""

from __future__ import annotations

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from handlers import health
from tests.conftest import AppFactory


def _values(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_a_backlog_never_counted_is_not_said_to_be_zero(
    postgres_dsn: str, start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.3)
    client = await start_app(database_url=postgres_dsn, metrics_reuse_s=0.0)
    locker = await asyncpg.connect(postgres_dsn)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")  # reads wait
            unknown = _values(await (await client.get("/metrics")).text())
    finally:
        await locker.close()
    assert unknown["calls_database_read"] == 0.0
    assert "customer_webhook_deliveries_pending" not in unknown
    assert "call_events_given_up" not in unknown
    for _ in range(50):  # the count left running ends once the lock is gone
        known = _values(await (await client.get("/metrics")).text())
        if known["calls_database_read"] == 1.0:
            break
    assert known["customer_webhook_deliveries_pending"] == 0.0
    assert known["call_events_given_up"] == 0.0
