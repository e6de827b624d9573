"""A call refused because its config write stalled: the write may land after the 503, and what
it wrote (the refused call's record and the seed's flat "latest" document) is taken back then,
as it is for a call refused by a limit or a taken Idempotency-Key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.config_store import store as config_store_module
from common.update_config import load_dynamic_config
from handlers.keys import CONFIG
from tests.helpers import SEED_EXAMPLES, hold_config_write, wait_for

Client = TestClient[Any, Any]


def _names(path: Path) -> list[str]:
    calls: dict[str, Any] = json.loads(path.read_text())["calls"]
    return [record["caller_name"] for record in calls.values()]


async def test_a_stalled_write_that_lands_after_its_503_is_taken_back(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 503 said the call was not placed, but the write under way landed once the disk let
    it through: config.json kept the refused call's record (its name and instructions) and
    its flat document, `load_dynamic_config()["caller_name"]` naming the refused call until
    another call was placed (for good, if none was)."""
    config = tmp_path / "config.json"
    monkeypatch.setattr(config_store_module, "WRITE_WAIT_S", 1.0, raising=False)
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Before"))
    assert placed.status == 200
    assert load_dynamic_config()["caller_name"] == "Before"

    held = hold_config_write(monkeypatch, b"Stalled")
    go, stalled, landed = held.go, held.held, held.landed
    try:
        refused = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[1], name="Stalled"))
        assert refused.status == 503
        assert stalled.is_set()
    finally:
        go.set()
    assert await asyncio.to_thread(landed.wait, 30)
    await client.app[CONFIG].flush_async()  # the write under way is in place

    async def taken_back() -> bool:
        return "Stalled" not in _names(config) and load_dynamic_config()["caller_name"] != (
            "Stalled"
        )

    await wait_for(taken_back, timeout=30)
    latest = load_dynamic_config()
    assert (latest["caller_name"], latest["tts_language"]) == ("Before", "en")
