"""CALLS_MAX_ACTIVE and the rate limit hold across two servers on one PostgreSQL with the
admission lock taken last (a597410) and new calls' share of the pool (00e6318)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory

RINGING = "+14155550480"  # rings until the ringing timeout: live throughout


async def burst_on_two_servers(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path, **limits: Any
) -> list[int]:
    """The statuses of 30 calls posted at once, alternately to two servers on one database
    with `limits` (calls_max_active, calls_rate_limit_per_min)."""
    common: dict[str, Any] = {"database_url": postgres_dsn, **limits}
    a = await start_app(config_path=tmp_path / "a" / "config.json", **common)
    b = await start_app(config_path=tmp_path / "b" / "config.json", **common)

    async def place(client: TestClient[Any, Any], n: int) -> int:
        body = {"phone_number": RINGING, "name": f"Caller {n}"}
        async with client.post("/calls/outbound", json=body) as resp:
            return resp.status

    return list(await asyncio.gather(*(place(a if n % 2 else b, n) for n in range(30))))


async def test_two_servers_admit_no_more_than_the_cap_between_them(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path
) -> None:
    statuses = await burst_on_two_servers(
        postgres_dsn, start_app, tmp_path, calls_max_active=5, calls_rate_limit_per_min=10_000
    )
    assert statuses.count(200) == 5, statuses
    assert set(statuses) <= {200, 429, 503}, statuses


async def test_two_servers_admit_no_more_than_the_rate_between_them(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path
) -> None:
    statuses = await burst_on_two_servers(
        postgres_dsn, start_app, tmp_path, calls_max_active=10_000, calls_rate_limit_per_min=7
    )
    assert statuses.count(200) == 7, statuses
