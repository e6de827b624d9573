"""Erasure on request through one server of several (PostgreSQL, a load balancer in front):
what the server that placed the call keeps of it in its own config.json goes too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.keys import CALLS, SETTINGS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_erasure import AUTH, TOKEN, settled
from tests.processes import free_port

Client = TestClient[Any, Any]
ALICE: dict[str, Any] = {**SEED_EXAMPLES[0], "additional_params": {"account": "ACCT-ALICE-77"}}


def top_level(client: Client) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(client.app[SETTINGS].config_path).read_bytes())
    return {key: value for key, value in doc.items() if key != "calls"}


async def test_a_call_erased_through_another_server_leaves_the_placing_servers_config_json(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path
) -> None:
    """Servers A and B on one database, each with its own config.json: a call B placed,
    erased through A (where the load balancer sent POST /calls/erase), kept its name,
    instructions and additional_params at the top of B's config.json (the seed's latest
    config) until B placed another call: A's erasure reaches only A's file. B's reaper
    finds the erased call, puts its file back to the defaults and removes the unreadable
    copies set aside that hold the erased name, as A's erasure does with its own."""
    common = {"database_url": postgres_dsn, "calls_api_token": TOKEN}
    b = await start_app(config_path=tmp_path / "b" / "config.json", **common)
    a = await start_app(config_path=tmp_path / "a" / "config.json", **common)
    call_id = await settled(b, ALICE)
    assert top_level(b)["caller_name"] == ALICE["name"]
    # Unreadable copies of B's config.json set aside earlier: one holding Alice's name.
    b_dir = Path(b.app[SETTINGS].config_path).parent
    holding = b_dir / "config.json.corrupt-20260101T000000-abcd"
    holding.write_bytes(b'{"caller_name": "Alice Smith", "agent_instr')
    other = b_dir / "config.json.corrupt-20260101T000001-abcd"
    other.write_bytes(b'{"caller_name": "Carlos Garc')

    resp = await a.post("/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["call_ids"] == [call_id]
    await b.app[CALLS].reap()

    kept = Path(b.app[SETTINGS].config_path).read_text()
    assert "Alice Smith" not in kept and "cricket coach" not in kept, kept
    assert "ACCT-ALICE-77" not in kept, kept
    assert top_level(b)["caller_name"] == "Guest"
    assert sorted(b_dir.glob("config.json.corrupt-*")) == [other]
    # A later call of B's is its own: the next pass leaves it.
    await settled(b, SEED_EXAMPLES[1])
    await b.app[CALLS].reap()
    assert top_level(b)["caller_name"] == SEED_EXAMPLES[1]["name"]


async def test_the_placing_server_restarted_since_still_finds_the_erased_call(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path
) -> None:
    """B restarted between its call and the erasure through A: its config.json's top level
    is still the erased call's, and B, known by its name (host, port), finds that call."""
    common = {"database_url": postgres_dsn, "calls_api_token": TOKEN}
    port, b_config = free_port(), tmp_path / "b" / "config.json"
    first_run = await start_app(port=port, config_path=b_config, **common)
    await settled(first_run, ALICE)
    await first_run.close()
    b = await start_app(port=port, config_path=b_config, **common)
    a = await start_app(config_path=tmp_path / "a" / "config.json", **common)
    await b.app[CALLS].reap()
    assert top_level(b)["caller_name"] == ALICE["name"]  # not erased yet: it stays

    resp = await a.post("/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["erased"] == 1
    await b.app[CALLS].reap()

    assert "Alice Smith" not in b_config.read_text()
    assert top_level(b)["caller_name"] == "Guest"


async def test_a_copy_set_aside_by_the_placing_server_goes_after_its_next_call(
    postgres_dsn: str, start_app: AppFactory, tmp_path: Path
) -> None:
    """B's config.json, holding Alice's call (the top level, her record), could not be read
    (cut short) when B placed its next call, which set it aside: erased through A, Alice's
    name and instructions stayed in that copy for good (B's reaper looked at copies only
    when its top level was still hers, and it was Bob's). The copies set aside on B go when
    they hold a call of B's erased on request: its record, or a top level written as it was
    placed."""
    common = {"database_url": postgres_dsn, "calls_api_token": TOKEN}
    b = await start_app(config_path=tmp_path / "b" / "config.json", **common)
    a = await start_app(config_path=tmp_path / "a" / "config.json", **common)
    await settled(b, ALICE)
    b_config = Path(b.app[SETTINGS].config_path)
    b_config.write_bytes(b_config.read_bytes()[:-5])  # cut short: unreadable
    await settled(b, SEED_EXAMPLES[1])  # its write sets it aside
    assert top_level(b)["caller_name"] == SEED_EXAMPLES[1]["name"]
    copies = sorted(b_config.parent.glob("config.json.corrupt-*"))
    assert len(copies) == 1 and b"Alice Smith" in copies[0].read_bytes()

    resp = await a.post("/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["erased"] == 1
    await b.app[CALLS].reap()

    assert sorted(b_config.parent.glob("config.json.corrupt-*")) == []
    assert top_level(b)["caller_name"] == SEED_EXAMPLES[1]["name"]  # Bob's call is his own
