"""A campaign's number given twice, its first row refused after the rows were read.

With `invalid_rows=skip`, a later row of a number is kept invalid as its repeat ("repeats row
2"). When the row it repeats was found invalid only then (its webhook_url's host resolving to
a non-public address, checked once every row is read) or for a window never open in its own
time zone, the number was called by none of its rows; while a first row refused for its
language left the next row of its number called. Repeats are now refused once every row was
checked: the first valid row of a number holds it.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory

SECRET = "whsec_" + base64.b64encode(b"customer-webhook-secret-for-tests-0123").decode()
# A month ahead: nobody is called meanwhile.
START_AT = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve(monkeypatch: pytest.MonkeyPatch, private: set[str]) -> None:
    """Names in `private` resolve to 127.0.0.1 (refused), others to a public address."""

    async def dns(self: Any, host: str, port: int = 0, family: int = 0) -> list[Any]:
        address = "127.0.0.1" if host in private else "93.184.216.34"
        return [{"hostname": host, "host": address, "port": port, "family": 2,
                 "proto": 0, "flags": 0}]  # fmt: skip

    from common.notify.guard import PooledResolver

    monkeypatch.setattr(PooledResolver, "resolve", dns)


async def created(client: TestClient[Any, Any], csv: str, **query: str) -> dict[str, Any]:
    params = {"name": "Repeats", "invalid_rows": "skip", "start_at": START_AT, **query}
    resp = await client.post(
        "/campaigns", params=params, data=csv.encode(), headers={"Content-Type": "text/csv"}
    )
    assert resp.status == 201, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


async def states(client: TestClient[Any, Any], campaign_id: str) -> list[tuple[int, str, str]]:
    resp = await client.get(f"/campaigns/{campaign_id}/recipients")
    return [(r["row"], r["phone_number"], r["state"]) for r in (await resp.json())["recipients"]]


async def test_a_repeat_of_a_row_whose_webhook_host_is_refused_is_called(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve(monkeypatch, {"internal.example.com"})
    client = await start_app(calls_webhook_secret=SECRET)
    answer = await created(
        client,
        "phone_number,name,webhook_url\r\n"
        "+14155550123,Ann,https://internal.example.com/hook\r\n"
        "+14155550123,Ann,\r\n"
        "+14155550124,Bob,\r\n",
    )
    assert answer["invalid_rows"] == [
        {
            "row": 2,
            "field": "webhook_url",
            "error": "internal.example.com resolves to a non-public address",
        }
    ]
    assert answer["invalid_row_count"] == 1
    counts = answer["campaign"]["counts"]
    assert (counts["invalid"], counts["waiting_window"] + counts["pending"]) == (1, 2)  # ahead
    listed = await states(client, answer["campaign_id"])
    assert [(row, number, state == "invalid") for row, number, state in listed] == [
        (2, "+14155550123", True),
        (3, "+14155550123", False),  # was 'repeats row 2': the number called by no row
        (4, "+14155550124", False),
    ]


async def test_a_repeat_taking_its_place_has_its_own_webhook_host_checked(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second row of the number (another form of it) has a webhook_url of a host refused
    too: the third holds the number, and the fourth repeats it."""
    resolve(monkeypatch, {"internal.example.com", "also-internal.example.com"})
    client = await start_app(calls_webhook_secret=SECRET)
    answer = await created(
        client,
        "phone_number,webhook_url\r\n"
        "+14155550123,https://internal.example.com/a\r\n"
        "+1 415 555 0123,https://also-internal.example.com/b\r\n"
        "+14155550123,https://hooks.example.com/c\r\n"
        "+14155550123,\r\n",
    )
    assert [(e["row"], e["field"], e["error"]) for e in answer["invalid_rows"]] == [
        (2, "webhook_url", "internal.example.com resolves to a non-public address"),
        (3, "webhook_url", "also-internal.example.com resolves to a non-public address"),
        (5, "phone_number", "repeats row 4"),
    ]
    listed = await states(client, answer["campaign_id"])
    assert [state == "invalid" for *_, state in listed] == [True, True, False, True]


async def test_a_repeat_of_a_row_never_open_in_its_own_zone_is_called(
    start_app: AppFactory,
) -> None:
    """A San Francisco number said to be in Kolkata is never inside 09:00-17:00 in both; the
    same number's next row, without that zone, is called (it was 'repeats row 2')."""
    client = await start_app()
    answer = await created(
        client,
        "phone_number,name,timezone\r\n+14155550123,Ann,Asia/Kolkata\r\n+14155550123,Ann,\r\n",
        window_start="09:00",
        window_end="17:00",
    )
    assert [(e["row"], e["field"]) for e in answer["invalid_rows"]] == [(2, "timezone")]
    listed = await states(client, answer["campaign_id"])
    assert [state == "invalid" for *_, state in listed] == [True, False]


async def test_a_repeat_of_a_valid_row_is_still_refused(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolve(monkeypatch, set())
    client = await start_app(calls_webhook_secret=SECRET)
    answer = await created(
        client,
        "phone_number,webhook_url\r\n+14155550123,https://hooks.example.com/a\r\n+14155550123,\r\n",
    )
    assert [(e["row"], e["error"]) for e in answer["invalid_rows"]] == [(3, "repeats row 2")]
