"""An erasure on request whose reset of config.json's top level (the seed's "latest config",
get_config_value("caller_name")) fails is held up, not answered 200 "erased".

The reset came after the database erasure: a full disk (ENOSPC), a directory the server may
not write (EACCES) or a write stalled past its deadline left the callee's name and
instructions at config.json's top level while the route answered 200 "erased", and the retry
found nothing to erase any more (the database no longer held them). Now the reset is made
before the erasure is written: failing, it answers 503 with Retry-After, the call not erased,
and the same request again erases both. Through the real app and its sandbox, on SQLite and
on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common import update_config
from common.config_store import store as config_store_module
from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, hold_config_write, immutable, placed_and_settled

Client = TestClient[Any, Any]
TOKEN = "hp-erasure-latest-kept-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = SEED_EXAMPLES[0]
NAME = str(ALICE["name"])


async def settled(client: Client, body: dict[str, Any]) -> str:
    return await placed_and_settled(client, body, AUTH)


async def erase(client: Client, route: str, call_id: str) -> Any:
    if route == "call":
        return await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    body = {"phone_number": ALICE["phone_number"]}
    return await client.post("/calls/erase", json=body, headers=AUTH)


@pytest.mark.parametrize("refusal", [errno.ENOSPC, errno.EACCES])
@pytest.mark.parametrize("route", ["call", "number"])
async def test_an_erasure_whose_latest_config_cannot_be_reset_is_held_up_and_retried(
    start_app_on_each_database: AppFactory,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
    refusal: int,
) -> None:
    client = await start_app_on_each_database(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    call_id = await settled(client, ALICE)
    assert update_config.get_config_value("caller_name") == NAME

    real = config_store_module._write_durably

    def refused(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(refusal, "refused by the test", str(path))

    monkeypatch.setattr(config_store_module, "_write_durably", refused)  # the disk full
    resp = await erase(client, route, call_id)
    text = await resp.text()
    assert resp.status == 503, text  # was 200 "erased", the name kept at the top level
    assert "Retry-After" in resp.headers
    assert "send the same request again" in text
    assert NAME not in text
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == NAME  # not erased: the retry still finds what to reset

    monkeypatch.setattr(config_store_module, "_write_durably", real)  # the disk freed
    resp = await erase(client, route, call_id)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["call_ids"] == [call_id]
    assert update_config.get_config_value("caller_name") == "Guest"
    assert NAME.encode() not in config_path.read_bytes()
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == ""


async def test_an_erasure_whose_latest_config_reset_stalls_is_held_up_and_retried(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reset's write held past its deadline (a stalled disk): answered 503 once the
    deadline passed, the call not erased; the write may still land, and the same request
    again erases the call whether it did or not."""
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    call_id = await settled(client, ALICE)
    monkeypatch.setattr(config_store_module, "WRITE_WAIT_S", 0.5)
    held = hold_config_write(monkeypatch, b'"caller_name": "Guest"')  # the reset's write

    resp = await erase(client, "call", call_id)
    text = await resp.text()
    assert held.held.is_set()
    assert resp.status == 503, text  # was 200 "erased" after the write's 10 s
    assert "Retry-After" in resp.headers and "did not answer" in text
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == NAME

    held.go.set()
    assert await asyncio.to_thread(held.landed.wait, 10)
    resp = await erase(client, "call", call_id)
    assert resp.status == 200, await resp.text()
    assert update_config.get_config_value("caller_name") == "Guest"
    assert NAME.encode() not in config_path.read_bytes()
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == ""


async def test_an_erasure_in_a_directory_made_read_only_is_held_up_and_retried(
    start_app: AppFactory,
) -> None:
    """The real refusal: config.json's directory made immutable (`chattr +i`), so no file
    can be made in it (EPERM) and config.json cannot be replaced."""
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    call_id = await settled(client, ALICE)

    with immutable(config_path.parent):
        resp = await erase(client, "number", call_id)
        text = await resp.text()
    assert resp.status == 503, text  # was 200 "erased", the name kept at the top level
    assert "Operation not permitted" in text and "Retry-After" in resp.headers
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == NAME

    resp = await erase(client, "number", call_id)
    assert resp.status == 200, await resp.text()
    assert update_config.get_config_value("caller_name") == "Guest"
    assert NAME.encode() not in config_path.read_bytes()
