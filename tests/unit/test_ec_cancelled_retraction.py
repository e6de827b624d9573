"""A refused call's retraction whose waiter is cancelled still gives the flat document back."""

from __future__ import annotations

import asyncio
import fcntl
import json
import threading
from pathlib import Path

import pytest

from common.config_store import store as config_store_module
from common.config_store.store import ConfigStore, ConfigWriteError


async def test_a_retraction_cancelled_while_queued_still_gives_the_flat_document_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused call's retraction queued behind the write under way, its waiter cancelled
    (the placing request's client gone, the server's stop), was written regardless but
    after the placement's end (`placed`) had dropped what the refused call's write replaced:
    its record went, yet the flat document (load_dynamic_config()["caller_name"]) went on
    naming the refused call until the next call."""
    config = tmp_path / "config.json"
    store = ConfigStore(config)
    await store.update_async("Before", "Hi")
    await store.update_async("Refused", "Hi", call_id="call-refused", placing=True)
    paused, go = threading.Event(), threading.Event()
    real = config_store_module._write_durably

    def pausing(path: Path, data: bytes, mode: int = 0o600) -> None:
        if not paused.is_set():
            paused.set()
            go.wait(30)
        real(path, data, mode)

    monkeypatch.setattr(config_store_module, "_write_durably", pausing)
    ahead = asyncio.ensure_future(store.remove_call_async("call-other"))
    try:
        assert await asyncio.to_thread(paused.wait, 10)
        retraction = asyncio.ensure_future(store.retract_call_async("call-refused"))
        await asyncio.sleep(0)  # queued behind the write under way
        retraction.cancel()
        with pytest.raises(asyncio.CancelledError):
            await retraction
        store.placed("call-refused")  # the placement ends, as CallService.place's does
    finally:
        go.set()
    assert await ahead is False
    await store.flush_async()
    doc = json.loads(config.read_bytes())
    assert "call-refused" not in doc["calls"]
    assert doc["caller_name"] == "Before"
    assert (await store.load_async())["caller_name"] == "Before"


async def test_the_stops_flush_writes_a_retraction_owed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused call's retraction whose write failed (config.json.lock held by another
    process) is owed, tried again within RETRACT_AGAIN_S; the server's stop flushed only the
    finished calls' removals, so a stop meanwhile left the flat document naming the refused
    call across the restart (its record pruned, as a finished call's). Now the stop's
    flush tries the owed retractions too."""
    monkeypatch.setattr(config_store_module, "LOCK_WAIT_S", 0.2)
    config = tmp_path / "config.json"
    store = ConfigStore(config)
    await store.update_async("Before", "Hi")
    await store.update_async("Refused", "Hi", call_id="call-refused", placing=True)
    with (tmp_path / "config.json.lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as another process holding it
        with pytest.raises(ConfigWriteError):
            await store.retract_call_async("call-refused")
        store.placed("call-refused")
    await store.flush_async()  # the server stops
    doc = json.loads(config.read_bytes())
    assert "call-refused" not in doc["calls"]
    assert doc["caller_name"] == "Before"
