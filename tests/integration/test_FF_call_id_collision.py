"""A call whose random id is an earlier call's (the calls database keeps every call's row) is
placed under another id, through the real app and the embedded sandbox, on each database.

It was answered 503 "calls database unavailable" (the row's primary key refused it), and
nobody was called. At 100,000 calls a day that happens two or three times in the first year,
more as the history grows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.calls import service
from common.update_config import load_dynamic_config
from handlers.keys import SETTINGS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import config_forgets, wait_for

TAKEN = "call-0000000000c1"
FRESH = "call-0000000000c2"


def drawing(monkeypatch: pytest.MonkeyPatch, *ids: str) -> None:
    """new_call_id() gives `ids` in turn."""
    draws: Iterator[str] = iter(ids)
    monkeypatch.setattr(service, "new_call_id", lambda: next(draws))


async def an_earlier_call(client: TestClient[Any, Any]) -> None:
    """A call placed as TAKEN, over (a trunk failure) and its config record gone: the calls
    database keeps its row."""
    placed = await client.post(
        "/calls/outbound", json={"phone_number": "+14155550503", "name": "Alice Smith"}
    )
    assert placed.status == 200 and (await placed.json())["call_id"] == TAKEN

    async def over() -> bool:
        return bool((await (await client.get(f"/calls/{TAKEN}")).json())["status"] == "failed")

    await wait_for(over, timeout=10)
    await config_forgets(Path(client.app[SETTINGS].config_path), TAKEN)


def dispatched_rooms(client: TestClient[Any, Any]) -> list[str]:
    return [
        r.body["room"]
        for r in client.app[SANDBOX].requests
        if r.method == "CreateDispatch" and r.authorized
    ]


async def test_a_call_whose_id_is_taken_is_placed_under_another(
    start_app_on_each_database: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app_on_each_database()
    config_path = Path(client.app[SETTINGS].config_path)
    drawing(monkeypatch, TAKEN, TAKEN, FRESH)
    await an_earlier_call(client)

    second = await client.post(
        "/calls/outbound",
        json={"phone_number": "+34612345678", "name": "Carlos García", "language": "es"},
        headers={"Idempotency-Key": "carlos-1"},
    )

    assert second.status == 200, await second.text()
    assert (await second.json())["call_id"] == FRESH
    records = json.loads(config_path.read_text())["calls"]
    assert set(records) == {FRESH}
    assert (records[FRESH]["caller_name"], records[FRESH]["tts_language"]) == (
        "Carlos García",
        "es",
    )
    assert load_dynamic_config()["caller_name"] == "Carlos García"
    assert dispatched_rooms(client) == [TAKEN, FRESH]
    shown = await (await client.get(f"/calls/{FRESH}")).json()
    assert (shown["name"], shown["phone_number"]) == ("Carlos García", "+34612345678")
    earlier = await (await client.get(f"/calls/{TAKEN}")).json()
    assert (earlier["name"], earlier["phone_number"], earlier["status"]) == (
        "Alice Smith",
        "+14155550503",
        "failed",
    )
    # Its Idempotency-Key is bound to the call placed: a retry is answered with it.
    retry = await client.post(
        "/calls/outbound",
        json={"phone_number": "+34612345678", "name": "Carlos García", "language": "es"},
        headers={"Idempotency-Key": "carlos-1"},
    )
    assert retry.status == 200 and (await retry.json())["call_id"] == FRESH
    assert dispatched_rooms(client) == [TAKEN, FRESH]


async def test_ids_taken_draw_after_draw_are_a_503_that_says_so_in_the_log(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    drawing(monkeypatch, *[TAKEN] * (1 + service.CALL_ID_DRAWS))
    await an_earlier_call(client)

    refused = await client.post("/calls/outbound", json={"phone_number": "+34612345678"})

    assert refused.status == 503 and refused.headers["Retry-After"]
    assert "3 call ids drawn in a row were taken already" in caplog.text
    assert dispatched_rooms(client) == [TAKEN]
