"""A recipient's own time zone (a CSV's `timezone` column, a JSON row's
additional_params.timezone): its calling hours are read there too, with its number's."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp.test_utils import TestClient

from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import ShiftedClock, wait_for
from tests.integration.test_campaigns import FAST, all_recipients, campaign_of, create

# A Wednesday 15:00 UTC: 10:00 in New York (open 09:00-20:00), 07:00 in Los Angeles (closed
# until 17:00 UTC), 16:00 in Madrid (open).
WEDNESDAY_15_UTC = dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC).timestamp()
NEW_YORK = "+12125557700"


async def test_a_rows_time_zone_keeps_its_calls_inside_the_window_there(
    start_app: AppFactory,
) -> None:
    # A New York number whose owner lives in California, in a CSV's timezone column and a
    # JSON row's additional_params: called at 10:00 New York time, 07:00 where they were.
    clock = ShiftedClock(WEDNESDAY_15_UTC)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    csv = f"phone_number,Time Zone\n{NEW_YORK},America/Los_Angeles\n+12125557701,Europe/Madrid\n"
    from_csv = await client.post(
        "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert from_csv.status == 201, await from_csv.text()
    from_json = await create(
        client,
        {
            "name": "json",
            "recipients": [
                {
                    "phone_number": NEW_YORK,
                    "additional_params": {"timezone": "America/Los_Angeles"},
                },
                {
                    "phone_number": "+12125557701",
                    "additional_params": {"timezone": "Europe/Madrid"},
                },
            ],
        },
    )
    for campaign_id in ((await from_csv.json())["campaign_id"], from_json["campaign_id"]):

        async def one_done(campaign_id: str = campaign_id) -> bool:
            counts = (await campaign_of(client, campaign_id))["counts"]
            return bool(counts["completed"] == 1 and counts["waiting_window"] == 1)

        await wait_for(one_done)
        waiting, called = await all_recipients(client, campaign_id)
        # 09:00 in Los Angeles; the Madrid row, open in Madrid and New York alike, was called
        assert waiting["state"] == "waiting_window"
        assert waiting["next_attempt_at"] == "2026-12-02T17:00:00.000Z"
        assert called["state"] == "completed"
    assert NEW_YORK not in [d.number for d in client.app[SANDBOX].dials]


async def test_a_rows_time_zone_never_widens_the_numbers_hours(start_app: AppFactory) -> None:
    # 12:00 UTC: 13:00 in Madrid, 07:00 in New York. A New York number said to be in Madrid
    # waits for 09:00 in New York (14:00 UTC): the number's zone still holds.
    clock = ShiftedClock(WEDNESDAY_15_UTC - 3 * 3600)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    created = await create(
        client,
        {
            "name": "widen",
            "recipients": [
                {"phone_number": NEW_YORK, "additional_params": {"timezone": "Europe/Madrid"}}
            ],
        },
    )
    (row,) = await all_recipients(client, created["campaign_id"])
    assert row["state"] == "waiting_window"
    assert row["next_attempt_at"] == "2026-12-02T14:00:00.000Z"


async def test_a_rows_bad_time_zone_is_refused_with_its_row(
    client: TestClient[Any, Any],
) -> None:
    csv = (
        "phone_number,timezone\n"
        f"{NEW_YORK},america/los_angeles\n"
        "+12125557701,Mars/Olympus\n"
        "+12125557702,\n"  # blank: the number's zones
    )
    resp = await client.post(
        "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert details == [
        {
            "row": 2,
            "field": "timezone",
            "error": "unknown time zone 'america/los_angeles'; did you mean 'America/Los_Angeles'?",
        },
        {
            "row": 3,
            "field": "timezone",
            "error": "unknown time zone 'Mars/Olympus'; use an IANA time zone name such as"
            " America/Chicago",
        },
    ]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "defaults": {"additional_params": {"timezone": "Nowhere"}},
            "recipients": [
                {"phone_number": NEW_YORK, "additional_params": {"timezone": 5}},
                {"phone_number": "+12125557701"},
            ],
        },
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d.get("row"), d["field"]) for d in details] == [
        (None, "defaults.additional_params.timezone")
    ]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "recipients": [
                {"phone_number": NEW_YORK, "additional_params": {"timezone": 5}},
                {"phone_number": "x", "additional_params": {"timezone": "Nowhere"}},
            ],
        },
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d["row"], d["field"]) for d in details] == [
        (0, "recipients[0].additional_params.timezone"),
        (1, "recipients[1].phone_number"),
        (1, "recipients[1].additional_params.timezone"),
    ]
    assert details[0]["error"] == ("must be an IANA time zone name such as America/Chicago; got 5")


async def test_a_time_zone_given_as_a_call_field_is_told_where_it_goes(
    client: TestClient[Any, Any],
) -> None:
    hint = (
        "unknown field; a recipient's own time zone goes in additional_params.timezone, the"
        " campaign's in window.timezone"
    )
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "recipients": [
                {"phone_number": NEW_YORK, "timezone": "America/Chicago"},
                {"phone_number": "+12125557701", "time_zone": "America/Chicago", "x": 1},
            ],
        },
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert details == [
        {"row": 0, "field": "recipients[0].timezone", "error": hint},
        {"row": 1, "field": "recipients[1].time_zone", "error": hint},
        {"row": 1, "field": "recipients[1].x", "error": "unknown field"},
    ]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "defaults": {"timezone": "America/Chicago"},
            "recipients": [{"phone_number": NEW_YORK}],
        },
    )
    assert (await resp.json())["details"] == [{"field": "defaults.timezone", "error": hint}]


async def test_a_rows_time_zone_holds_when_its_turn_comes_and_for_its_retries(
    start_app: AppFactory,
) -> None:
    # 00:55 UTC: 16:55 in California, 19:55 in New York, where the rows' owners live. A busy
    # row's retry 600 s on is at 20:05 in New York; a row whose campaign starts at 01:00 UTC
    # (open then) is reached at 01:10, 20:10 in New York. Both wait for 09:00 in California
    # (17:00 UTC), open in both; they were called at 17:05 and 17:10 California time.
    at = dt.datetime(2026, 12, 2, 0, 55, tzinfo=dt.UTC).timestamp()
    clock = ShiftedClock(at)
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=clock, **FAST)
    own_zone = {"additional_params": {"timezone": "America/New_York"}}
    busy = await create(
        client,
        {
            "name": "retry",
            "recipients": [{"phone_number": "+14155550486", **own_zone}],
            "retry": {"on": ["busy"], "max_attempts": 2, "delay_s": 600},
        },
    )
    later = await create(
        client,
        {
            "name": "later",
            "recipients": [{"phone_number": "+14155557700", **own_zone}],
            "start_at": "2026-12-02T00:58:00Z",
        },
    )

    async def retry_waiting() -> bool:
        counts = (await campaign_of(client, busy["campaign_id"]))["counts"]
        return bool(counts["waiting_window"] == 1)

    await wait_for(retry_waiting)
    clock.move_to(at + 15 * 60)

    async def reached() -> bool:
        rows = await all_recipients(client, later["campaign_id"])
        return bool(rows[0]["state"] == "waiting_window")

    await wait_for(reached)
    for campaign_id in (busy["campaign_id"], later["campaign_id"]):
        (row,) = await all_recipients(client, campaign_id)
        assert row["next_attempt_at"] == "2026-12-02T17:00:00.000Z"
    assert [d.number for d in client.app[SANDBOX].dials] == ["+14155550486"]


async def test_the_estimated_finish_reads_the_rows_own_zone(start_app: AppFactory) -> None:
    """400 New York numbers of people in California at 0.01 calls/s (39,900 s of calls) from
    09:00 in California: open in both 17:00-01:00 UTC, 8 hours a day, so the last call is at
    20:05 UTC the next day. The estimate read New York alone (14:00-01:00 UTC): 17:05."""
    client = await start_app(sandbox_time_scale=0.0, campaign_clock=ShiftedClock(WEDNESDAY_15_UTC))
    answer = await create(
        client,
        {
            "name": "estimate",
            "recipients": [
                {
                    "phone_number": f"+1212{200 + n // 100}{n % 100:04d}",
                    "additional_params": {"timezone": "America/Los_Angeles"},
                }
                for n in range(400)
            ],
            "pacing": {"calls_per_second": 0.01},
            "start_at": "2026-12-04T17:00:00Z",
        },
    )
    assert answer["campaign"]["estimated_finish_at"] == "2026-12-05T20:05:00.000Z"
    campaign = await campaign_of(client, answer["campaign_id"])
    assert campaign["estimated_finish_at"] == "2026-12-05T20:05:00.000Z"


async def test_a_rows_zone_that_shuts_its_window_is_the_field_refused(
    client: TestClient[Any, Any],
) -> None:
    # A London number whose row says Auckland: 09:00-20:00 in both never meet, whatever the
    # date (Sydney's did from late March to late October, London on summer time or Sydney
    # off it: 08:00-10:00 UTC, and the test failed then). The refusal named phone_number
    # ("never inside the calling window in its time zones"), as if the number were at fault;
    # the number alone is open every day. It names the row's zone.
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "recipients": [
                {
                    "phone_number": "+447700900123",
                    "additional_params": {"timezone": "Pacific/Auckland"},
                }
            ],
        },
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d["row"], d["field"]) for d in details] == [
        (0, "recipients[0].additional_params.timezone")
    ]
    assert "Pacific/Auckland" in details[0]["error"]
    assert "its number's time zones (Europe/Guernsey" in details[0]["error"]
    csv = "phone_number,Time Zone\n+447700900123,Pacific/Auckland\n"
    resp = await client.post(
        "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d["row"], d["field"]) for d in details] == [(2, "Time Zone")]


async def test_a_zone_column_with_an_invisible_character_is_still_the_rows_zone(
    client: TestClient[Any, Any],
) -> None:
    # A BOM or a zero-width space pasted into the header cell, full-width letters: the column
    # went to the agent alone, its value never checked and the hours read in the number's.
    # The column's name is the header cell's without its invisible characters.
    for header, name in (
        ("\ufefftimezone", "timezone"),
        ("Time\u200b Zone", "Time Zone"),
        ("\uff34ime\u200dzone", "\uff34imezone"),
    ):
        csv = f"phone_number,{header}\n{NEW_YORK},Mars/Olympus\n"
        resp = await client.post(
            "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
        )
        assert resp.status == 422, (header, await resp.text())
        details = (await resp.json())["details"]
        assert [(d["row"], d["field"]) for d in details] == [(2, name)], details


async def test_two_columns_naming_the_rows_zone_are_refused(
    client: TestClient[Any, Any],
) -> None:
    # "timezone" and "Time Zone" (two lists' columns merged): the first was read for the
    # calling hours, the other went to the agent alone, unchecked (Sydney here, never open
    # with New York's hours, was not said).
    csv = f"phone_number,timezone,Time Zone\n{NEW_YORK},America/New_York,Australia/Sydney\n"
    resp = await client.post(
        "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["details"] == [
        {
            "field": "row 1: Time Zone",
            "error": "column 3 names the recipient's time zone, as column 2 does; keep one",
        }
    ]


async def test_a_json_rows_zone_under_two_keys_is_refused(client: TestClient[Any, Any]) -> None:
    # A CRM record's timezone and time_zone: the first was read for the calling hours, the
    # other went to the agent alone, unchecked (Sydney, never open with New York, unsaid).
    both = {"timezone": "America/New_York", "time_zone": "Australia/Sydney"}
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "defaults": {"additional_params": both},
            "recipients": [{"phone_number": NEW_YORK, "additional_params": both}],
        },
    )
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["details"]
    said = "names the recipient's time zone, as 'timezone' does: keep one"
    assert [(d.get("row"), d["field"], d["error"]) for d in details] == [
        (None, "defaults.additional_params.time_zone", said),
    ]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "json",
            "recipients": [{"phone_number": NEW_YORK, "additional_params": both}],
        },
    )
    assert resp.status == 422, await resp.text()
    details = (await resp.json())["details"]
    assert [(d.get("row"), d["field"], d["error"]) for d in details] == [
        (0, "recipients[0].additional_params.time_zone", said),
    ]


async def test_a_rows_zone_abbreviation_is_refused_with_the_zone_it_means(
    client: TestClient[Any, Any],
) -> None:
    """`EST` is an IANA name, but of UTC-5 all year: a list's `EST` means New York, whose
    clocks are an hour later in summer, so calling hours read in it ended at 22:00 there
    (for a number whose own zones allowed it: a California mobile). `PST`, `CDT` were
    refused with no hint. Each now names the zone to write; `HST` (Hawaii keeps no daylight
    saving) and `EST5EDT` stay."""
    csv = (
        "phone_number,timezone\n"
        f"{NEW_YORK},EST\n"
        "+12125557701,PST\n"
        "+12125557702,mst\n"
        "+12125557703,HST\n"
        "+12125557704,EST5EDT\n"
    )
    resp = await client.post(
        "/campaigns?name=csv", data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 422
    details = (await resp.json())["details"]
    assert [(d["row"], d["field"]) for d in details] == [
        (2, "timezone"),
        (3, "timezone"),
        (4, "timezone"),
    ]
    assert details[0]["error"] == (
        "'EST' is UTC-5 all year, while Eastern time moves an hour in summer: write"
        " 'America/New_York'"
    )
    assert details[1]["error"] == "unknown time zone 'PST'; did you mean 'America/Los_Angeles'?"
    assert details[2]["error"] == "unknown time zone 'mst'; did you mean 'America/Denver'?"
