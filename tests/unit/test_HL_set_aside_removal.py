"""ConfigStore.remove_set_aside_naming_async(or_raise=True), which an erasure on request runs
before writing the erasure: a copy that may hold the callee and stays raises (the erasure is
held up); a copy gone meanwhile (pruned between the listing and its read) is no failure."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from common.config_store.store import ConfigStore

NAME = "Zelda Quenby"
PLACED = [{"caller_name": NAME, "agent_instructions": "Call Zelda Quenby about Friday."}]


def set_aside(config: Path, stamp: str, text: str) -> Path:
    path = config.with_name(f"config.json.corrupt-{stamp}")
    path.write_text(text)
    return path


async def test_a_copy_holding_the_callee_that_cannot_be_removed_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ConfigStore(tmp_path / "config.json")
    held = set_aside(store.path, "20260101T000000-abcd", f'{{"caller_name": "{NAME}"')
    other = set_aside(store.path, "20260102T000000-abcd", '{"caller_name": "Other"')
    unlink = os.unlink

    def refused(path: Any, *args: Any, **kwargs: Any) -> None:
        if ".corrupt-" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)
    assert await store.remove_set_aside_naming_async(PLACED) == 0  # logged, not raised
    with pytest.raises(OSError, match="Permission denied") as raised:
        await store.remove_set_aside_naming_async(PLACED, or_raise=True)
    assert raised.value.errno == errno.EACCES and NAME not in str(raised.value)
    assert held.exists() and other.exists()


async def test_a_copy_gone_meanwhile_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ConfigStore(tmp_path / "config.json")
    gone = "config.json.corrupt-20260101T000000-abcd"
    monkeypatch.setattr(ConfigStore, "_set_aside_names", staticmethod(lambda _t: [gone]))
    assert await store.remove_set_aside_naming_async(PLACED, or_raise=True) == 0
