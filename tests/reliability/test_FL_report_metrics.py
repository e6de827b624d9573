"""agent_reports_total on a database outage: PostgreSQL stopped, every agent report (the
answer, the transcript, the verdicts) was refused 503 and counted nowhere, while
webhooks_total counted each LiveKit webhook so refused as db_error: a dashboard of reports
showed none lost. Real signed reports, the real app, a real PostgreSQL stopped."""

from __future__ import annotations

import json

from server import SANDBOX
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered
from tests.integration.test_report_batches import turn
from tests.integration.test_report_limits import post_text
from tests.integration.test_webhooks import place
from tests.pg_cluster import PostgresCluster


async def test_reports_refused_by_a_database_outage_are_counted(
    postgres_dsn: str, start_app: AppFactory, postgres_cluster: PostgresCluster
) -> None:
    client = await start_app(database_url=postgres_dsn, sandbox_time_scale=100.0)
    client.app[SANDBOX].webhook_url = None  # the test posts what the call hears
    call_id = await place(client)
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="db_error"} 0.0' in metrics  # there from the start
    postgres_cluster.stop()
    try:
        batch = [answered(call_id, 0), turn(call_id, 1, "Hello Ann")]
        status, answer = await post_text(client, call_id, json.dumps(batch))
        assert status == 503, answer
    finally:
        postgres_cluster.start()
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="db_error"} 2.0' in metrics  # one a report, as others
    assert 'agent_reports_total{result="applied"} 0.0' in metrics
    status, answer = await post_text(client, call_id, json.dumps(batch))  # the agent's retry
    assert status == 200, answer
    metrics = await (await client.get("/metrics")).text()
    assert 'agent_reports_total{result="applied"} 2.0' in metrics
