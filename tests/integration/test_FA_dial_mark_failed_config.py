"""A call whose dial could not be marked as started (the calls database failing then) is
never dialled and answered 503; its config write is taken back as a refused call's is: the
seed's flat document (load_dynamic_config()["caller_name"]) went on naming that call, never
placed, where it named the call placed before it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.storage.base import DatabaseError
from handlers.keys import CALLS, CONFIG
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES


def assert_config_back_to_before(client: TestClient[Any, Any], tmp_path: Path) -> None:
    """config.json as the call "Before" left it: "Never", not placed, took its write back."""
    doc = json.loads((tmp_path / "config.json").read_bytes())
    assert doc["caller_name"] == "Before"
    assert [r["caller_name"] for r in doc["calls"].values()] == ["Before"]
    assert client.app[CONFIG]._tops_before == {}  # nothing kept for either call


async def test_a_dial_not_marked_takes_its_config_write_back(
    start_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app(sandbox_time_scale=100.0)  # the first call stays live
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Before"))
    assert placed.status == 200
    store = client.app[CALLS].store

    async def failing(*_args: Any, **_kwargs: Any) -> None:
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(store, "start_dial", failing)
    refused = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[1], name="Never"))
    assert refused.status == 503
    assert_config_back_to_before(client, tmp_path)
    dials = [r for r in client.app[SANDBOX].requests if r.method == "CreateSIPParticipant"]
    assert len(dials) == 1  # "Never" was not dialled


@pytest.mark.parametrize("method", ["CreateDispatch", "CreateSIPParticipant"])
async def test_a_call_livekit_refused_before_dialling_takes_its_config_write_back(
    start_app: AppFactory, tmp_path: Path, method: str
) -> None:
    """LiveKit refused the agent's dispatch or the dial before dialling (503 unavailable):
    nobody was called, and the flat document named that call all the same."""
    from sandbox import TwirpError

    client = await start_app(sandbox_time_scale=100.0)
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Before"))
    assert placed.status == 200
    client.app[SANDBOX].inject(method, error=TwirpError("unavailable", "restarting"), times=1)
    refused = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[1], name="Never"))
    assert refused.status in (502, 503)
    assert_config_back_to_before(client, tmp_path)
