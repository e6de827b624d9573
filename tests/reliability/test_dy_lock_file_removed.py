"""config.json.lock removed (or replaced) while a write holds it: an operator's clean-up of a
"stale" lock file after a crash, a tmp cleaner aging it out (it is never written to, so it
looks old). The next writer of another process made a new lock file and took it at once: two
writers at the same time, and the one that replaced config.json last dropped what the other
wrote (here another process's call record, lost for good)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore, ConfigWriteError
from tests.helpers import hold_config_write

ROOT = Path(__file__).resolve().parents[2]

# Another process's write of one call record (the seed's update_config with call_id=).
OTHER_WRITER = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from common.config_store.store import ConfigStore
ConfigStore(sys.argv[1]).update("Other", call_id="call-other")
"""


async def test_a_write_whose_lock_file_was_removed_does_not_drop_another_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.json"
    store = ConfigStore(config)
    await store.update_async("First", call_id="call-first")

    held = hold_config_write(monkeypatch, b"Held")
    go, holding = held.go, held.held
    write = asyncio.ensure_future(store.update_async("Held", call_id="call-held"))
    try:
        assert await asyncio.to_thread(holding.wait, 30)  # the lock is held, mid-write
        store.lock_path.unlink()  # the clean-up
        other = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", OTHER_WRITER, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert other.returncode == 0, other.stderr
    finally:
        go.set()
    with pytest.raises(ConfigWriteError, match="was (removed|replaced) while this write held it"):
        await write

    calls = json.loads(config.read_text())["calls"]
    assert set(calls) == {"call-first", "call-other"}  # the other process's record stays
    await store.update_async("Held", call_id="call-held")  # a new try goes through
    assert set(json.loads(config.read_text())["calls"]) == {
        "call-first",
        "call-other",
        "call-held",
    }
