"""A call's `call.ended` carries the transcript reported so far, as GET /calls/{id} shows it.

README: a customer webhook's data is "the call as GET /calls/{call_id} shows it, without the
timeline", and GET shows, before the final report, the turns the agent reported so far. The
events left them out: a call that ended before its final report (a real agent's report comes
after its analysis) said `"transcript": []` in its call.ended. Seen with the real server on
the sandbox, number ...0666 (its agent's process dies mid-call, so no final report and no
call.report ever): GET showed the three turns said, and the customer, who got call.ended
with none and nothing after it, had no word of the conversation.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

from tests.conftest import AppFactory
from tests.helpers import serving, wait_for
from tests.integration.test_customer_webhooks import SECRET, settle, webhook_app


async def test_call_ended_carries_the_turns_reported_before_it(
    start_app_on_each_database: AppFactory,
) -> None:
    got: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        got.append(Webhook(SECRET).verify(body, dict(request.headers)))
        return web.Response(status=204)

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serving(receive))
        client = await webhook_app(
            start_app_on_each_database, url + "/hooks", sandbox_time_scale=0.05
        )
        # Answered; its agent's process dies mid-call: its turns so far, no final report.
        resp = await client.post("/calls/outbound", json={"phone_number": "+14155550666"})
        assert resp.status == 200, await resp.text()
        call_id = (await resp.json())["call_id"]

        async def ended() -> bool:
            return any(event["type"] == "call.ended" for event in got)

        await wait_for(ended, timeout=20)
        await settle(client)
        shown = await (await client.get(f"/calls/{call_id}")).json()

    assert shown["report_status"] == "pending", shown  # no final report: no call.report
    assert shown["transcript"], shown  # the sandbox's agent said something before it died
    [event] = [event for event in got if event["type"] == "call.ended"]
    assert event["data"]["transcript"] == shown["transcript"], json.dumps(event, indent=1)
    assert [event["type"] for event in got] == ["call.dialing", "call.answered", "call.ended"]
