"""A new campaign's window.timezone `EST` or `MST` is refused naming the zone meant, as a
row's is: they are IANA names of UTC-5 and UTC-7 all year, and a window `09:00-20:00` in
`EST` ran 10:00-21:00 by New York's clocks all summer (the rows' refusal left the window's
alone). An abbreviation that is no zone (`PST`) is told the zone it means there too."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient

LATER = (dt.datetime.now(dt.UTC) + dt.timedelta(days=200)).strftime("%Y-%m-%dT%H:%M:%SZ")
EST_SAID = (
    "'EST' is UTC-5 all year, while Eastern time moves an hour in summer: write 'America/New_York'"
)


async def _refusal(client: TestClient[Any, Any], zone: str) -> tuple[int, list[Any]]:
    body = {
        "name": "window zone",
        "window": {"start": "09:00", "end": "20:00", "timezone": zone},
        "recipients": [{"phone_number": "+12125557700"}],
    }
    resp = await client.post("/campaigns", json=body)
    return resp.status, (await resp.json()).get("details", [])


async def test_a_windows_fixed_offset_abbreviation_is_refused(
    client: TestClient[Any, Any],
) -> None:
    status, details = await _refusal(client, "EST")
    assert status == 422, details
    assert [(d["field"], d["error"]) for d in details] == [("window.timezone", EST_SAID)]
    status, details = await _refusal(client, "MST")
    assert status == 422, details
    assert "'America/Denver'" in details[0]["error"]


async def test_a_windows_abbreviation_is_told_the_zone_it_means(
    client: TestClient[Any, Any],
) -> None:
    status, details = await _refusal(client, "PST")
    assert status == 422, details
    assert [(d["field"], d["error"]) for d in details] == [
        ("window.timezone", "unknown time zone 'PST'; did you mean 'America/Los_Angeles'?")
    ]


async def test_a_csv_campaigns_timezone_parameter_is_refused_as_est(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post(
        "/campaigns?name=csv&timezone=EST",
        data=b"phone_number\n+12125557700\n",
        headers={"Content-Type": "text/csv"},
    )
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["details"]
    assert [d["error"] for d in details] == [EST_SAID], details


async def test_zones_that_keep_their_time_all_year_or_move_with_it_stand(
    client: TestClient[Any, Any],
) -> None:
    for zone in ("HST", "EST5EDT", "America/New_York", "recipient"):
        body = {
            "name": f"window {zone}",
            "window": {"timezone": zone, "end": "24:00", "start": "00:00"},
            "recipients": [{"phone_number": "+12125557700"}],
            "start_at": LATER,
        }
        resp = await client.post("/campaigns", json=body)
        assert resp.status == 201, (zone, await resp.text())
