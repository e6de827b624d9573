"""An erasure (POST /calls/erase) committed while a delivery of the call's event is out: that
send carries the call as it was (known, README), but its retries, and a redelivery of an
event delivered before the erasure, carry the call as erased: on SQLite, and on PostgreSQL
with the retry sent by whichever of two servers claims it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import Client, place, wait_until, webhook_app

ALICE: dict[str, Any] = {**SEED_EXAMPLES[0], "additional_params": {"account": "ACCT-ALICE-77"}}
TELLING = (ALICE["name"].encode(), b"ACCT-ALICE-77")


async def ended(client: Client, call_id: str) -> None:
    async with asyncio.timeout(15):
        while (await (await client.get(f"/calls/{call_id}")).json())["status"] != "completed":
            await asyncio.sleep(0.02)


async def erasing_and_placing(
    start: AppFactory, url: str, database: str, tmp_path: Path
) -> tuple[Client, Client]:
    """(the app erasing, the app placing) with customer webhooks to `url`: one app on
    SQLite; two on one PostgreSQL database (`database` "postgres"; `start`: start_app_on)."""
    b = await webhook_app(start, url, config_path=tmp_path / "b" / "config.json")
    if database != "postgres":
        return b, b
    a = await webhook_app(start, url, config_path=tmp_path / "a" / "config.json")
    return a, b


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_retries_and_redeliveries_after_an_erasure_carry_the_erased_call(
    database: str, start_app_on: AppFactory, tmp_path: Path
) -> None:
    release = asyncio.Event()
    bodies: list[tuple[str, int, bytes]] = []  # (event type, attempt, body)

    async def receive(http: web.Request) -> web.Response:
        body = await http.read()
        kind = json.loads(body)["type"]
        attempt = 1 + sum(1 for t, _, _ in bodies if t == kind)
        bodies.append((kind, attempt, body))
        if kind == "call.report" and attempt == 1:
            await release.wait()  # out while the call is erased, then refused
            return web.Response(status=503)
        return web.Response(status=204)

    async with serving(receive, "/hooks", "POST") as base:
        # On PostgreSQL, erased through the other server, which sends too.
        a, b = await erasing_and_placing(start_app_on, f"{base}/hooks", database, tmp_path)
        call_id = await place(b, ALICE)
        await wait_until(lambda: any(t == "call.report" for t, _, _ in bodies), timeout=15)
        await ended(b, call_id)
        resp = await a.post("/calls/erase", json={"phone_number": ALICE["phone_number"]})
        assert resp.status == 200 and (await resp.json())["call_ids"] == [call_id]
        since = len(bodies)  # every send from here starts after the erasure
        release.set()
        await wait_until(lambda: ("call.report", 2) in [(t, n) for t, n, _ in bodies])

        listed = (await (await a.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
        dialing = next(d for d in listed if d["event"] == "call.dialing")
        assert dialing["state"] == "delivered"
        resp = await a.post(f"/deliveries/{dialing['id']}/redeliver")
        assert resp.status in (200, 202), await resp.text()
        await wait_until(lambda: ("call.dialing", 2) in [(t, n) for t, n, _ in bodies])

    first = next(body for t, n, body in bodies if (t, n) == ("call.report", 1))
    assert all(word in first for word in TELLING)  # out before the erasure: as it was
    after = bodies[since:]
    for kind, attempt, body in after:
        leaked = [word for word in TELLING if word in body]
        assert not leaked, (kind, attempt, leaked)
    report = json.loads(next(body for t, n, body in after if (t, n) == ("call.report", 2)))
    assert report["data"]["transcript"] == [] and report["data"]["personal_data_erased_at"]
