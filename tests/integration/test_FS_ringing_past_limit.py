"""A ringing timeout longer than the call's max duration cannot work: LiveKit counts
max_call_duration from the dial, ringing included, so the line is cut at the max duration
while it still rings. POST /calls/outbound with {"ringing_timeout_s": 120,
"max_duration_s": 30} was 200 and dialled (and rang 30 s, then no_answer); a campaign's
defaults likewise; and CALL_RINGING_TIMEOUT_S=600 with CALL_MAX_DURATION_S=30 started."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.settings import SettingsError, settings_from_env
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES


def dials(client: TestClient[Any, Any]) -> int:
    return sum(r.method == "CreateSIPParticipant" for r in client.app[SANDBOX].requests)


async def test_a_call_ringing_past_its_max_duration_is_refused(start_app: AppFactory) -> None:
    client = await start_app()
    body = dict(SEED_EXAMPLES[0], ringing_timeout_s=120, max_duration_s=30)
    resp = await client.post("/calls/outbound", json=body)
    answer = await resp.json()
    assert resp.status == 422, answer
    (detail,) = answer["details"]
    assert detail["field"] == "max_duration_s"
    assert "120 s" in detail["error"] and "ringing included" in detail["error"]
    assert dials(client) == 0
    # As long as it may last is fine; so are the seed's bodies, on the defaults.
    ok = await client.post("/calls/outbound", json=dict(body, ringing_timeout_s=30))
    assert ok.status == 200, await ok.text()
    for seed in SEED_EXAMPLES:
        assert (await client.post("/calls/outbound", json=seed)).status == 200


async def test_the_servers_ringing_timeout_counts(start_app: AppFactory) -> None:
    """A request's max_duration_s under CALL_RINGING_TIMEOUT_S is refused, naming it."""
    client = await start_app(call_ringing_timeout_s=60)
    resp = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], max_duration_s=30))
    assert resp.status == 422
    (detail,) = (await resp.json())["details"]
    assert detail["field"] == "max_duration_s"
    assert "CALL_RINGING_TIMEOUT_S" in detail["error"]


async def test_campaign_defaults_ringing_past_the_max_duration(start_app: AppFactory) -> None:
    client = await start_app()
    resp = await client.post(
        "/campaigns",
        json={
            "name": "short",
            "recipients": [{"phone_number": "+14155550131"}],
            "defaults": {"ringing_timeout_s": 120, "max_duration_s": 30},
        },
    )
    assert resp.status == 422
    fields = [d["field"] for d in (await resp.json())["details"]]
    assert "defaults.max_duration_s" in fields


def test_settings_ringing_past_the_max_duration_stop_start_up() -> None:
    env = {"CALL_RINGING_TIMEOUT_S": "600", "CALL_MAX_DURATION_S": "30"}
    with pytest.raises(SettingsError, match="CALL_RINGING_TIMEOUT_S \\(600\\) is longer"):
        settings_from_env(env, config_file_read=False)
    taken = settings_from_env(dict(env, CALL_RINGING_TIMEOUT_S="30"), config_file_read=False)
    assert taken.call_ringing_timeout_s == 30
