"""A campaign sent while this server has no file descriptor left is a 503, not a 500.

A campaign's window names a time zone, checked against the list of zones zoneinfo can load,
read from tzdata's files the first time a campaign needs it (and each zone's rules, the
first time that zone is used). With every descriptor in use that read failed `[Errno 24]
Too many open files: '.../tzdata/zones'`, and the campaign was answered 500 "internal
error", with a traceback logged for each. It is now a 503 with Retry-After saying this
server is out of file descriptors; sent again once they are free, it is created. A row's
webhook_url whose host could not be looked up then does not make the row invalid.
"""

from __future__ import annotations

from typing import Any

import pytest

from common.campaigns import windows
from tests.conftest import AppFactory
from tests.integration.test_customer_webhooks import SECRET
from tests.unit.test_FW_livekit_out_of_descriptors import refused_for_want_of_descriptors


async def test_a_campaign_sent_with_no_descriptor_left_is_answered_503(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in a server that has not read the zones' list yet (the first campaign since it
    # started); other tests in this process may have.
    windows._zone_names.cache_clear()
    windows._zones_by_spelling.cache_clear()
    client = await start_app(
        calls_webhook_secret=SECRET,
        calls_webhook_allow_private=True,
        campaign_enforce_calling_hours=False,
    )
    body = {
        "name": "descriptors",
        "recipients": [{"phone_number": "+14155557701", "webhook_url": "http://localhost:9/h"}],
        "window": {"start": "00:00", "end": "24:00", "timezone": "UTC"},
    }
    assert (await client.get("/healthz")).status == 200  # a connection kept open
    await refused_for_want_of_descriptors(client, "/campaigns", body)

    resp = await client.post("/campaigns", json=body)
    created: dict[str, Any] = await resp.json()
    assert resp.status == 201, created
    assert created["invalid_row_count"] == 0, created

    # The zones' list read now: the row's webhook_url lookup is what finds no descriptor
    # (a 503, not 201 with the row invalid for good).
    await refused_for_want_of_descriptors(client, "/campaigns", {**body, "name": "again"})
