"""What README's "Ordering" now says of a campaign's events, held to the service: its own
events keep their order, but `campaign.completed` is not held back behind its calls' events
(one of them being retried), so a receiver collecting a campaign's results must wait for
each call's events, not for `campaign.completed`. Seen with the real server on the sandbox,
a receiver down for 8 s during a three-call campaign: campaign.completed (counts final)
reached it before two of the calls' call.ended, while README spoke of order only within a
call, and of campaign.completed as the campaign's end."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

from tests.conftest import AppFactory
from tests.helpers import OPEN_EVERYWHERE, ShiftedClock, serving, wait_for
from tests.integration.test_customer_webhooks import SECRET, settle, webhook_app


async def test_campaign_completed_is_not_held_behind_its_calls_retried_events(
    start_app: AppFactory,
) -> None:
    got: list[tuple[str, str]] = []  # (type, status) as delivered
    refused: set[str] = set()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        event: dict[str, Any] = Webhook(SECRET).verify(body, dict(request.headers))
        if event["type"] == "call.ended" and not refused:  # down for that one, once
            refused.add(request.headers["webhook-id"])
            return web.Response(status=500)
        got.append((event["type"], json.dumps(event["data"].get("counts"))))
        return web.Response(status=204)

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serving(receive))
        client = await webhook_app(
            start_app,
            url + "/hooks",
            calls_webhook_retry_schedule=(0.0, 1.0),
            campaign_enforce_calling_hours=False,
            campaign_clock=ShiftedClock(OPEN_EVERYWHERE),  # inside the default 09:00-20:00
        )
        resp = await client.post(
            "/campaigns",
            json={"name": "Order", "recipients": [{"phone_number": "+14155557701"}]},
        )
        assert resp.status == 201, await resp.text()

        async def all_in() -> bool:
            return [kind for kind, _ in got].count("call.ended") == 1

        await wait_for(all_in, timeout=20)
        await settle(client)

    kinds = [kind for kind, _ in got]
    assert kinds.index("campaign.started") < kinds.index("campaign.completed"), got
    # The call's end, retried, came after the campaign's: README says so now.
    assert kinds.index("campaign.completed") < kinds.index("call.ended"), got
    completed = json.loads(got[kinds.index("campaign.completed")][1])
    assert completed["completed"] == 1, completed  # its counts were final all the same


async def test_campaign_canceled_is_its_last_event_its_live_calls_going_on(
    start_app: AppFactory,
) -> None:
    """README: campaign.canceled is a canceled campaign's last event; its counts show the
    calls live then as `calling`, and their own events follow it."""
    got: list[tuple[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        event = Webhook(SECRET).verify(await request.read(), dict(request.headers))
        got.append((event["type"], json.dumps(event["data"].get("counts"))))
        return web.Response(status=204)

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(serving(receive))
        client = await webhook_app(
            start_app,
            url + "/hooks",
            campaign_enforce_calling_hours=False,
            sandbox_time_scale=0.1,
            campaign_clock=ShiftedClock(OPEN_EVERYWHERE),
        )
        resp = await client.post(  # answered, then 30 s (3, scaled) on the line
            "/campaigns",
            json={"name": "Cancel", "recipients": [{"phone_number": "+14155557730"}]},
        )
        assert resp.status == 201, await resp.text()
        campaign_id = (await resp.json())["campaign_id"]

        async def answered() -> bool:
            return "call.answered" in [kind for kind, _ in got]

        await wait_for(answered, timeout=20)
        resp = await client.post(f"/campaigns/{campaign_id}/cancel")
        assert resp.status == 200, await resp.text()

        async def ended() -> bool:
            return "call.ended" in [kind for kind, _ in got]

        await wait_for(ended, timeout=20)
        await settle(client)
        shown = (await (await client.get(f"/campaigns/{campaign_id}")).json())["campaign"]

    kinds = [kind for kind, _ in got]
    assert [kind for kind in kinds if kind.startswith("campaign.")] == [
        "campaign.started",
        "campaign.canceled",
    ], got
    canceled = json.loads(got[kinds.index("campaign.canceled")][1])
    assert canceled["calling"] == 1, canceled
    assert kinds.index("campaign.canceled") < kinds.index("call.ended"), got
    assert (shown["status"], shown["counts"]["calling"], shown["counts"]["completed"]) == (
        "canceled",
        0,
        1,
    ), shown
