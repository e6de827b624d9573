"""Customer webhook deliveries: see them per call, and send one again."""

from __future__ import annotations

import re

from aiohttp import web

from handlers.campaigns import CAMPAIGN_ID, LIST_LIMIT
from handlers.errors import HttpError
from handlers.http import (
    DB_DOWN,
    UNAUTHORIZED,
    Reply,
    RouteDoc,
    add_route,
    int_param,
    json_answer,
    page_of,
)
from handlers.keys import CALLS, CAMPAIGNS, STORE, WEBHOOKS
from handlers.schemas import DeliveryList, DeliveryPage, DeliveryView, RedeliverAnswer


async def call_deliveries(request: web.Request) -> web.Response:
    """GET /calls/{call_id}/deliveries: each event's delivery to the call's webhook URL."""
    call = await request.app[CALLS].get(request.match_info["call_id"])
    return await _deliveries_of(request, call.call_id)


async def campaign_deliveries(request: web.Request) -> web.Response:
    """GET /campaigns/{campaign_id}/deliveries: the campaign's own events (campaign.started,
    .paused, .resumed, .canceled, .completed), whose deliveries no route showed: a receiver
    that missed campaign.completed had no id to redeliver it by."""
    campaign = await request.app[CAMPAIGNS].get(request.match_info["campaign_id"])
    limit = LIST_LIMIT.of(request)
    after = int_param(request, "after", 0, 0, MAX_DELIVERY_ID)
    found = await request.app[STORE].list_deliveries(
        campaign.campaign_id, limit=limit + 1, after=after
    )
    # Those at or before `after` are earlier pending ones, for `waiting_for` alone.
    views = [v for v in DeliveryView.list_of(found) if v.id > after]
    page, last = page_of(views, limit)
    return json_answer(DeliveryPage(deliveries=page, next_after=last.id if last else None))


async def _deliveries_of(request: web.Request, subject: str) -> web.Response:
    """A call's or a campaign's deliveries (a campaign's events are filed under its id)."""
    deliveries = await request.app[STORE].list_deliveries(subject)
    return json_answer(DeliveryList(deliveries=DeliveryView.list_of(deliveries)))


MAX_DELIVERY_ID = 2**63 - 1  # the largest id either database can hold
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_delivery_id(text: str) -> int:
    """A delivery id from the path; anything that cannot name a row is unknown (404)."""
    if _DIGITS.fullmatch(text) is None or not 1 <= int(text) <= MAX_DELIVERY_ID:
        raise HttpError(404, "unknown delivery")
    return int(text)


async def redeliver(request: web.Request) -> web.Response:
    """POST /deliveries/{delivery_id}/redeliver: a new attempt, with the same webhook-id."""
    delivery_id = parse_delivery_id(request.match_info["delivery_id"])
    if WEBHOOKS not in request.app:
        if await request.app[STORE].get_delivery(delivery_id) is None:
            raise HttpError(404, "unknown delivery")  # as on a server that sends them
        # Nothing on this server sends deliveries: a 202 "sent again now" left it `pending`.
        raise HttpError(
            409,
            "customer webhooks are not enabled on this server (CALLS_WEBHOOK_SECRET is unset):"
            " nothing would send it",
        )
    delivery = await request.app[STORE].redeliver(delivery_id)
    if delivery is None:
        raise HttpError(404, "unknown delivery")
    request.app[WEBHOOKS].wake()
    # As its call's list shows it: whether it waits behind an earlier event's delivery (the
    # earliest pending to each URL before it, and itself).
    siblings = await request.app[STORE].list_deliveries(
        delivery.call_id, limit=1, after=delivery.id - 1
    )
    shown = {view.id: view for view in DeliveryView.list_of(siblings)}
    view = shown.get(delivery.id) or DeliveryView.of(delivery)
    return json_answer(RedeliverAnswer(delivery=view), status=202)


def setup(app: web.Application) -> None:
    call_id = {
        "name": "call_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The call id answered by POST /calls/outbound",
    }
    add_route(
        app,
        RouteDoc(
            "GET",
            "/calls/{call_id}/deliveries",
            "callDeliveries",
            "The call's customer webhook deliveries: event, attempts, last answer, next try",
            protected=True,
            parameters=[call_id],
            replies={
                200: Reply("The deliveries, oldest first", DeliveryList),
                401: UNAUTHORIZED,
                404: Reply("No such call"),
                503: DB_DOWN,
            },
        ),
        call_deliveries,
    )
    add_route(
        app,
        RouteDoc(
            "GET",
            "/campaigns/{campaign_id}/deliveries",
            "campaignDeliveries",
            "The campaign's own events' customer webhook deliveries (campaign.started, ...),"
            " a page at a time",
            protected=True,
            parameters=[
                CAMPAIGN_ID,
                LIST_LIMIT.doc,
                {
                    "name": "after",
                    "in": "query",
                    "description": "next_after of the previous page",
                    "allowEmptyValue": True,  # after= is from the first
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_DELIVERY_ID},
                },
            ],
            replies={
                200: Reply("The deliveries, oldest first", DeliveryPage),
                400: Reply("A bad query parameter"),
                401: UNAUTHORIZED,
                404: Reply("No such campaign"),
                503: DB_DOWN,
            },
        ),
        campaign_deliveries,
    )
    add_route(
        app,
        RouteDoc(
            "POST",
            "/deliveries/{delivery_id}/redeliver",
            "redeliver",
            "Send a delivery again now (same webhook-id)",
            protected=True,
            parameters=[
                {
                    "name": "delivery_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DELIVERY_ID},
                }
            ],
            replies={
                202: Reply("Queued", RedeliverAnswer),
                401: UNAUTHORIZED,
                404: Reply("No such delivery"),
                409: Reply("Customer webhooks are not enabled on this server"),
                503: DB_DOWN,
            },
        ),
        redeliver,
    )
