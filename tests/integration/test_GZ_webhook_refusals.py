"""A customer's receiver that refuses an event for good. A 413 (its body limit, nginx's 1 MiB
default under a long call's `call.report`) was retried on the ladder for 31 h though the
same bytes can never fit, and every later event of the call to that URL waited behind it
(`call.ended` a day late to the CRM); the deliveries API said only `HTTP 413`. Any refusal
said nothing of what the receiver answered. Now a 413 fails at once (redeliver it once the
limit is raised) and the call's later events go; every refusal's `last_error` quotes the
start of the receiver's answer, which the log does not (it may echo the event)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from common.calls.models import WebhookDelivery
from common.notify.deliveries import next_outcome
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import Client, place, wait_until, webhook_app

# The first retry an hour later: nothing on this ladder is retried within a test.
LONG_LADDER = (0.0, 3600.0)


async def deliveries(client: Client, call_id: str) -> list[dict[str, Any]]:
    answer = await client.get(f"/calls/{call_id}/deliveries")
    listed: list[dict[str, Any]] = (await answer.json())["deliveries"]
    return listed


async def test_a_body_too_large_fails_at_once_and_the_calls_later_events_go(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        if event["type"] == "call.answered":
            return web.Response(status=413, text="<html>413 Request Entity Too Large</html>")
        got.append(event["type"])
        return web.Response(status=204)

    async with serving(receive, "/hooks", "POST") as base:
        client = await webhook_app(
            start_app, f"{base}/hooks", calls_webhook_retry_schedule=LONG_LADDER
        )
        call_id = await place(client, SEED_EXAMPLES[0])
        await wait_until(lambda: {"call.ended", "call.report"} <= set(got), timeout=20)
        listed = await deliveries(client, call_id)
    refused = next(d for d in listed if d["event"] == "call.answered")
    assert (refused["state"], refused["attempts"], refused["last_status"]) == ("failed", 1, 413)
    assert refused["next_attempt_at"] is None
    assert refused["last_error"].startswith("HTTP 413 (the receiver takes no body this large: ")
    assert '"<html>413 Request Entity Too Large</html>"' in refused["last_error"]
    assert got[0] == "call.dialing"
    line = next(r.getMessage() for r in caplog.records if "call.answered" in r.getMessage())
    assert "HTTP 413" in line and "failed" in line and "<html>" not in line


async def test_a_refusal_says_what_the_receiver_answered(start_app: AppFactory) -> None:
    answers = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal answers
        answers += 1
        text = '{"error": "unknown event type",\n"hint": "\u202eupdate the parser"}' + "x" * 9000
        return web.Response(status=400, text=text, content_type="application/json")

    async with serving(receive, "/hooks", "POST") as base:
        client = await webhook_app(
            start_app, f"{base}/hooks", calls_webhook_retry_schedule=LONG_LADDER
        )
        call_id = await place(client, SEED_EXAMPLES[0])
        await wait_until(lambda: answers >= 1)

        for _ in range(250):  # its attempt recorded, a moment after the answer
            if (await deliveries(client, call_id))[0]["attempts"] == 1:
                break
            await asyncio.sleep(0.02)
        first = (await deliveries(client, call_id))[0]
    assert first["state"] == "pending" and first["next_attempt_at"] is not None  # retried
    error = first["last_error"]
    assert error.startswith('HTTP 400: "{\\"error\\": \\"unknown event type\\", \\"hint\\"'), error
    assert "\u202e" not in error and "\n" not in error and len(error) < 300, error


def test_a_413_is_no_retry_a_400_is_and_410_still_stops() -> None:
    delivery = WebhookDelivery(
        1, 1, "call-1", "https://h/", "msg_1", "pending", 0, 0.0, None, None, 0.0, None
    )
    assert next_outcome(delivery, 413, "HTTP 413", (0.0, 5.0), 100.0).state == "failed"
    assert next_outcome(delivery, 410, "HTTP 410", (0.0, 5.0), 100.0).state == "stopped"
    assert next_outcome(delivery, 400, "HTTP 400", (0.0, 5.0), 100.0).state == "pending"


async def test_an_erasure_erases_what_a_refusing_receiver_echoed(
    start_app_on_each_database: AppFactory,
) -> None:
    """A receiver's error quoting the event (a validation error quoting its input, as
    FastAPI's 422 does) put the callee's name in the delivery's last_error: an erasure on
    request cuts the quote off."""
    alice = SEED_EXAMPLES[0]

    async def receive(request: web.Request) -> web.Response:
        event = json.loads(await request.read())
        text = json.dumps({"detail": f"no contact named {event['data']['name']}"})
        return web.Response(status=422, text=text, content_type="application/json")

    async with serving(receive, "/hooks", "POST") as base:
        client = await webhook_app(start_app_on_each_database, f"{base}/hooks")
        call_id = await place(client, alice)
        async with asyncio.timeout(20):
            while (listed := await deliveries(client, call_id)) and not (
                len(listed) == 4 and all(d["state"] == "failed" for d in listed)
            ):
                await asyncio.sleep(0.05)
        assert any(alice["name"] in d["last_error"] for d in listed), listed
        resp = await client.post("/calls/erase", json={"phone_number": alice["phone_number"]})
        assert resp.status == 200 and (await resp.json())["call_ids"] == [call_id]
        listed = await deliveries(client, call_id)
    errors = [d["last_error"] for d in listed]
    assert errors == ["HTTP 422 (the receiver's answer: erased)"] * 4, errors
