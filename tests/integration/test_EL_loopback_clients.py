"""Without CALLS_API_TOKEN the server listens on loopback only, so every client is this
machine, whichever loopback address it comes from (127.0.0.1, ::1 with HOST=localhost,
127.0.0.2). The limits and Idempotency-Keys were kept per address: a retry of a call under
the same Idempotency-Key and body from 127.0.0.2 dialled the same number a second time, and
each address had a rate limit of its own."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.helpers import SEED_TEST_BODY


async def _post_from(
    client: TestClient[Any, Any], source: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any], str | None]:
    """POST the seed's call from the loopback address `source`."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        url = client.make_url("/calls/outbound")
        async with session.post(url, json=SEED_TEST_BODY, headers=headers) as resp:
            return resp.status, await resp.json(), resp.headers.get("Idempotent-Replay")


async def test_a_retry_from_another_loopback_address_is_not_a_second_call(
    start_app: AppFactory,
) -> None:
    client = await start_app()
    key = {"Idempotency-Key": "order-42-call-1"}
    status, first, _ = await _post_from(client, "127.0.0.1", key)
    assert status == 200, first
    status, again, replay = await _post_from(client, "127.0.0.2", key)
    assert status == 200, again
    assert again["call_id"] == first["call_id"] and replay == "1"
    calls = (await (await client.get("/calls")).json())["calls"]
    assert [c["call_id"] for c in calls] == [first["call_id"]]  # dialled once


async def test_the_rate_limit_holds_across_loopback_addresses(start_app: AppFactory) -> None:
    client = await start_app(calls_rate_limit_per_min=1)
    status, body, _ = await _post_from(client, "127.0.0.1", {})
    assert status == 200, body
    status, body, _ = await _post_from(client, "127.0.0.2", {})
    assert status == 429, body
