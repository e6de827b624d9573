"""A campaign whose calls cannot be placed (config.json's disk full, the database down) says
so once a minute, not once per attempt.

Seen on the real server.py with config.json on a full tmpfs, a campaign at 5 calls/s and
`max_concurrent` 20: 20 ERROR lines `campaign ...: recipient N attempt 1 not placed yet
([Errno 28] could not write config (write): No space left on device); will try again` in 4 s,
one per recipient tried, again each time its slots were tried; the attempts were placed
once the disk had room, as they should be. Now the first line of a campaign is said, then
one a minute with how many were held back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

import pytest

from common.config_store.store import ConfigWriteError
from handlers.keys import CONFIG
from tests.conftest import AppFactory
from tests.integration.test_campaigns import FAST, create

NOT_PLACED = "not placed yet"


async def test_attempts_refused_by_a_full_disk_log_one_line_a_campaign(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app(campaign_enforce_calling_hours=False, **FAST)

    async def update_async(*_args: Any, **_kwargs: Any) -> None:
        raise ConfigWriteError(errno.ENOSPC, "could not write config (write): No space left")

    monkeypatch.setattr(client.app[CONFIG], "update_async", update_async)
    caplog.set_level(logging.INFO, logger="common.campaigns")
    await create(
        client,
        {
            "name": "full disk",
            "recipients": [{"phone_number": f"+1415555{7700 + n}"} for n in range(8)],
            "pacing": {"calls_per_second": 50, "max_concurrent": 8},
            "window": {"start": "00:00", "end": "24:00", "timezone": "UTC"},
        },
    )
    for _ in range(100):  # until every recipient was tried: each is left being placed
        counts = (await (await client.get("/campaigns")).json())["campaigns"][0]["counts"]
        if counts["calling"] == 8:
            break
        await asyncio.sleep(0.05)
    assert counts["calling"] == 8, counts
    lines = [r.getMessage() for r in caplog.records if NOT_PLACED in r.getMessage()]
    assert len(lines) == 1, lines
