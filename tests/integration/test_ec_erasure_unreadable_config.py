"""An erasure reaches an unreadable config.json itself, not only the copies set aside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from handlers.keys import SETTINGS
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_erasure import AUTH, TOKEN, settled

Client = TestClient[Any, Any]
ALICE = dict(SEED_EXAMPLES[0], name="Alice Smith")


def holding(directory: Path, needle: bytes) -> list[str]:
    """The config files (config.json, its copies set aside, temp files) holding `needle`."""
    return sorted(
        p.name
        for p in directory.iterdir()
        if "config.json" in p.name and p.is_file() and needle in p.read_bytes()
    )


async def test_an_erasure_leaves_no_unreadable_config_json_holding_the_callee_to_set_aside(
    start_app: AppFactory,
) -> None:
    """config.json unreadable (cut short by hand or a crash) while it held an erased call's
    name: the erasure removed the copies set aside holding it, but not config.json itself,
    and the next call's write kept it aside (config.json.corrupt-<stamp>, kept for good),
    the erased callee's name and instructions with it. Now the erasure replaces such a
    config.json with a fresh one, keeping no copy; one that holds no erased data is kept
    aside as before."""
    client = await start_app(sandbox_time_scale=0.05, calls_api_token=TOKEN)
    config = Path(client.app[SETTINGS].config_path)
    await settled(client, ALICE)
    config.write_bytes(b'{"caller_name": "Alice Smith", "agent_instructions": "You are')
    assert holding(config.parent, b"Alice Smith") == ["config.json"]

    resp = await client.post(
        "/calls/erase", json={"phone_number": ALICE["phone_number"]}, headers=AUTH
    )
    assert resp.status == 200 and (await resp.json())["erased"] == 1
    assert holding(config.parent, b"Alice Smith") == []

    await settled(client, SEED_EXAMPLES[1])  # the next call's write
    assert holding(config.parent, b"Alice Smith") == []
    assert list(config.parent.glob("config.json.corrupt-*")) == []
