"""`agent_reports_total{result}` counts every report refused, as `webhooks_total` counts
LiveKit's: a signed report whose body is not JSON (cut short on its way, or not UTF-8) was
answered 400 and counted nowhere, while a JSON one that is no report counted `malformed`; and
a body over the limit (413) or one never read in time was not counted at all (webhooks count
them `too_large` and `unreadable`). An agent whose reports were all refused so showed no
refusal in /metrics."""

from __future__ import annotations

import io
import json
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from common.contracts import MAX_REPORT_BYTES, REPORTS_PATH
from tests.conftest import AppFactory
from tests.integration.test_call_results import answered, report_token
from tests.integration.test_report_limits import post_text
from tests.integration.test_webhooks import place

Client = TestClient[Any, Any]


async def _reports(client: Client) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    return {
        sample.labels["result"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "agent_reports"
        for sample in family.samples
        if sample.name == "agent_reports_total"
    }


async def test_each_refused_report_is_counted(start_app: AppFactory) -> None:
    # (its calls stretched 100 times: the sandbox's agent reports nothing meanwhile)
    client = await start_app(metrics_reuse_s=0.0, sandbox_time_scale=100.0)
    call_id = await place(client)
    before = await _reports(client)
    for body in (b'{"call_id": "', b"\xff\xfe{}"):  # cut short; not UTF-8
        headers = {"Authorization": "Bearer " + report_token(body, call_id)}
        resp = await client.post(REPORTS_PATH, data=io.BytesIO(body), headers=headers)
        assert resp.status == 400
    big = b" " * (MAX_REPORT_BYTES + 1)
    headers = {"Authorization": "Bearer " + report_token(big, call_id)}
    assert (await client.post(REPORTS_PATH, data=io.BytesIO(big), headers=headers)).status == 413
    after = await _reports(client)
    counted = {result: after[result] - before.get(result, 0.0) for result in after}
    assert {result: n for result, n in counted.items() if n} == {"malformed": 2, "too_large": 1}


async def test_a_batch_refused_for_another_calls_report_counts_each_report(
    start_app: AppFactory,
) -> None:
    """A batch (agent/reporting.py sends what queued in one POST) holding a report of another
    call is refused whole: each of its reports counted `other_call`, as `unknown_call` and
    `db_error` count each report of a batch they refuse (it counted 1 for 3 reports)."""
    client = await start_app(metrics_reuse_s=0.0, sandbox_time_scale=100.0)
    call_id, other = await place(client), await place(client)
    before = await _reports(client)
    batch = [answered(call_id, 0), answered(call_id, 1), answered(other, 0)]
    status, _ = await post_text(client, call_id, json.dumps(batch))
    assert status == 409
    after = await _reports(client)
    assert after["other_call"] - before["other_call"] == 3
