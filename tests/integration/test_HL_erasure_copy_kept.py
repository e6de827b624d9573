"""An erasure on request whose config.json copy holding the callee could not be removed first
(a directory the server may not write, EACCES) is held up, not answered 200 "erased".

Those copies (`config.json.corrupt-<stamp>`) are found by what the call was placed with, which
the database no longer holds once the erasure is written: the copy that could not be removed
was left holding the callee's name and instructions for good, the client told 200 "erased",
and its retry (once the directory was fixed) found nothing to look for. Now the erasure is
answered 503 with Retry-After, the call not erased, and the same request again erases both.
Through the real app and its sandbox; the directory's refusal is os.unlink's (the tests run
as root, whom a directory's mode does not stop).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import CALLS, SETTINGS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, placed_and_settled

Client = TestClient[Any, Any]
TOKEN = "hl-erasure-copy-kept-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ALICE = SEED_EXAMPLES[0]
NAME = str(ALICE["name"]).encode()


async def settled(client: Client, body: dict[str, Any]) -> str:
    return await placed_and_settled(client, body, AUTH)


def copies_holding_the_callee(config_path: Path) -> list[Path]:
    return [p for p in config_path.parent.glob("config.json.corrupt-*") if NAME in p.read_bytes()]


@pytest.mark.parametrize("route", ["call", "number"])
async def test_an_erasure_whose_copy_cannot_be_removed_is_held_up_and_retried(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    call_id = await settled(client, ALICE)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # a torn edit: unreadable
    await settled(client, SEED_EXAMPLES[1])  # its write sets the file aside
    assert copies_holding_the_callee(config_path)

    unlink = os.unlink

    def refused(path: Any, *args: Any, **kwargs: Any) -> None:
        if ".corrupt-" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        unlink(path, *args, **kwargs)

    async def erase() -> Any:
        if route == "call":
            return await client.post(f"/calls/{call_id}/erase", headers=AUTH)
        body = {"phone_number": ALICE["phone_number"]}
        return await client.post("/calls/erase", json=body, headers=AUTH)

    monkeypatch.setattr(os, "unlink", refused)
    resp = await erase()
    text = await resp.text()
    assert resp.status == 503, text  # was 200 "erased", the copy kept for good
    assert "Retry-After" in resp.headers
    assert "Permission denied" in text and "send the same request again" in text
    assert NAME.decode() not in text
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == ALICE["name"]  # not erased: the retry still finds the copy
    assert copies_holding_the_callee(config_path)

    monkeypatch.setattr(os, "unlink", unlink)  # the directory fixed
    resp = await erase()
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["call_ids"] == [call_id]
    assert copies_holding_the_callee(config_path) == []
    call = await (await client.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert call["name"] == ""


async def test_a_copy_holding_a_nameless_calls_params_goes_at_the_next_reaper_pass(
    start_app: AppFactory,
) -> None:
    """A call placed with no name nor instructions, only additional_params (a campaign's CSV
    columns without a name column), gives an erasure nothing to find its copies by: the copy
    set aside after it (config.json unreadable at the next call's write) kept them after the
    erasure's 200. The next reaper pass finds it by the call's record in it."""
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    nameless = {"phone_number": "+14155557701", "additional_params": {"account": "ACCT-55-X"}}
    call_id = await settled(client, nameless)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # cut short: unreadable
    await settled(client, SEED_EXAMPLES[1])  # its write sets it aside
    held = list(config_path.parent.glob("config.json.corrupt-*"))
    assert len(held) == 1 and b"ACCT-55-X" in held[0].read_bytes()

    resp = await client.post(f"/calls/{call_id}/erase", headers=AUTH)
    assert resp.status == 200, await resp.text()
    await client.app[CALLS].reap()

    assert list(config_path.parent.glob("config.json.corrupt-*")) == []


async def test_a_copy_of_another_calls_top_level_stays_when_the_next_call_is_erased(
    start_app: AppFactory,
) -> None:
    """The reaper's pass finds a copy's top level's call by when it was written: the calls
    this server placed within a minute after. Alice's top level set aside by Bob's write,
    then Bob erased on request: the copy holds nothing of Bob's (it was set aside before
    his write), and it was removed, the operator's copy of config.json with it, because
    Bob was placed within that minute. A call not erased wrote that top level: it stays."""
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config_path = Path(client.app[SETTINGS].config_path)
    await settled(client, ALICE)
    config_path.write_bytes(config_path.read_bytes()[:-5])  # cut short: unreadable
    bob = await settled(client, SEED_EXAMPLES[1])  # its write sets it aside
    assert len(copies_holding_the_callee(config_path)) == 1

    resp = await client.post(f"/calls/{bob}/erase", headers=AUTH)
    assert resp.status == 200, await resp.text()
    await client.app[CALLS].reap()

    assert len(copies_holding_the_callee(config_path)) == 1
