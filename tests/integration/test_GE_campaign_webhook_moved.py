"""A campaign's own events follow CALLS_WEBHOOK_URL as its calls' do. The URL was fixed as
the campaign was created: once CALLS_WEBHOOK_URL was changed (a receiver moved, the server
restarted), its calls' events went to the new receiver and its campaign.paused, .resumed and
.completed to the old one, which a customer's "list done" automation never heard of (seen
with the real server: campaign.started and .completed at the old receiver, the call's four
events at the new). A campaign whose defaults name a webhook_url keeps it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
from typing import Any

from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import serving

SECRET = "whsec_" + base64.b64encode(b"customer-webhook-secret-for-tests-0123").decode()
START_AT = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _campaign(**defaults: Any) -> dict[str, Any]:
    return {
        "name": "Moved",
        "start_at": START_AT,
        "defaults": defaults,
        "recipients": [{"phone_number": "+14155550131"}],
    }


async def test_a_campaigns_events_follow_calls_webhook_url_as_its_calls_do(
    start_app_on_each_database: AppFactory,
) -> None:
    got: dict[str, list[tuple[str, str]]] = {"old": [], "new": []}

    def receiver(name: str) -> Any:
        async def receive(request: web.Request) -> web.Response:
            event = json.loads(await request.read())
            got[name].append((event["type"], event["data"]["campaign_id"]))
            return web.Response()

        return receive

    async with contextlib.AsyncExitStack() as stack:
        old = await stack.enter_async_context(serving(receiver("old")))
        new = await stack.enter_async_context(serving(receiver("new")))
        webhooks = {"calls_webhook_secret": SECRET, "calls_webhook_allow_private": True}
        first = await start_app_on_each_database(calls_webhook_url=old + "/", **webhooks)
        created = []
        for body in (_campaign(), _campaign(webhook_url=old + "/own")):
            resp = await first.post("/campaigns", json=body)
            assert resp.status == 201, await resp.text()
            created.append((await resp.json())["campaign_id"])
        follows, own = created
        await first.close()

        second = await start_app_on_each_database(calls_webhook_url=new + "/", **webhooks)
        for campaign_id in created:
            resp = await second.post(f"/campaigns/{campaign_id}/pause")
            assert resp.status == 200, await resp.text()
        async with asyncio.timeout(10):
            while len(got["old"]) + len(got["new"]) < 2:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # nothing more comes
    assert got == {"old": [("campaign.paused", own)], "new": [("campaign.paused", follows)]}


async def test_a_server_with_webhooks_off_leaves_campaigns_webhook_url_as_it_is(
    start_app: AppFactory,
) -> None:
    """On a shared database the servers that send webhooks may be others: one started
    without them (a worker) does not silence the campaigns' events."""
    url = "http://127.0.0.1:9/hooks"  # never sent to: the second server sends nothing
    first = await start_app(
        calls_webhook_url=url, calls_webhook_secret=SECRET, calls_webhook_allow_private=True
    )
    resp = await first.post("/campaigns", json=_campaign())
    assert resp.status == 201, await resp.text()
    campaign_id = (await resp.json())["campaign_id"]
    await first.close()

    second = await start_app()  # webhooks off
    resp = await second.post(f"/campaigns/{campaign_id}/pause")
    assert resp.status == 200, await resp.text()
    resp = await second.get(f"/campaigns/{campaign_id}/deliveries")
    deliveries = (await resp.json())["deliveries"]
    assert [d["event"] for d in deliveries] == ["campaign.paused"], deliveries
