"""A campaign's creation is logged as one plain line: how many recipients, and how many rows
were skipped only when some were. It read `campaign cmp-… (List) created: 1 recipients, 0
invalid row(s) ` (a trailing blank where "skipped" goes, and "1 recipients")."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from tests.conftest import AppFactory

# Scheduled: no call placed meanwhile.
LATER = {"start_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat()}


async def test_the_created_line_says_the_rows_and_only_the_skipped_ones(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    caplog.set_level(logging.INFO, logger="common.campaigns.service")
    one = {"name": "One", "recipients": [{"phone_number": "+14155550123"}], **LATER}
    two = {
        "name": "Two",
        "recipients": [{"phone_number": "+14155550124"}, {"phone_number": "bad"}],
        "invalid_rows": "skip",
        **LATER,
    }
    ids = []
    for body in (one, two):
        resp = await client.post("/campaigns", json=body)
        assert resp.status == 201, await resp.text()
        ids.append((await resp.json())["campaign_id"])
    said = [r.getMessage() for r in caplog.records if " created: " in r.getMessage()]
    assert said == [
        f"campaign {ids[0]} (One) created: 1 recipient(s)",
        f"campaign {ids[1]} (Two) created: 1 recipient(s), 1 invalid row(s) skipped",
    ]
