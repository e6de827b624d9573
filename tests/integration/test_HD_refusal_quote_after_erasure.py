"""A receiver's refusal that arrives after the call was erased (POST /calls/erase while the
attempt was out): its quote in the delivery's `last_error` may echo the event as it was sent
(the callee's name, an additional param). The erasure had already cut the quotes it found,
so the one recorded after it kept the name in GET /calls/{id}/deliveries for good: on
SQLite, and on PostgreSQL with the call erased through the other of two servers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, serving
from tests.integration.test_customer_webhooks import place, wait_until
from tests.integration.test_GZ_erased_retries import ended, erasing_and_placing

ALICE: dict[str, Any] = {**SEED_EXAMPLES[0], "additional_params": {"account": "ACCT-ALICE-77"}}
TELLING = (ALICE["name"], "ACCT-ALICE-77")


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_a_refusal_recorded_after_the_erasure_does_not_quote_the_erased_call(
    database: str, start_app_on: AppFactory, tmp_path: Path
) -> None:
    release = asyncio.Event()
    answered = asyncio.Event()
    seen: list[str] = []

    async def receive(http: web.Request) -> web.Response:
        body = await http.read()
        kind = json.loads(body)["type"]
        seen.append(kind)
        if kind == "call.report" and seen.count(kind) == 1:
            await release.wait()  # out while the call is erased
            answered.set()
            # A framework's validation error quoting its input: the event as it was sent.
            name = json.loads(body)["data"]["name"]
            return web.json_response({"error": "bad field", "input": name}, status=400)
        return web.Response(status=204)

    async with serving(receive, "/hooks", "POST") as base:
        # On PostgreSQL, erased through the other server.
        a, b = await erasing_and_placing(start_app_on, f"{base}/hooks", database, tmp_path)
        call_id = await place(b, ALICE)
        await wait_until(lambda: "call.report" in seen, timeout=15)
        await ended(b, call_id)
        resp = await a.post("/calls/erase", json={"phone_number": ALICE["phone_number"]})
        assert resp.status == 200 and (await resp.json())["call_ids"] == [call_id]
        release.set()
        await answered.wait()

        async def refused() -> dict[str, Any] | None:
            listed = (await (await a.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
            report = next(d for d in listed if d["event"] == "call.report")
            return report if report["last_status"] == 400 else None

        async with asyncio.timeout(10):
            while (report := await refused()) is None:
                await asyncio.sleep(0.02)
    error = report["last_error"]
    assert error.startswith("HTTP 400"), error
    leaked = [word for word in TELLING if word in error]
    assert not leaked, error
    assert error.endswith("(the receiver's answer: erased)"), error
