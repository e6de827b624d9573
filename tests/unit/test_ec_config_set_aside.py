"""An unreadable config.json is kept aside without config.json ever going missing."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from common.config_store import store as config_store_module
from common.config_store.store import ConfigStore, ConfigWriteError

ROOT = Path(__file__).resolve().parents[2]
CORRUPT = b'{"caller_name": "Half written'
SEED_LOAD = (
    f"import sys, json; sys.path.insert(0, {str(ROOT)!r});"
    " from common.update_config import load_dynamic_config;"
    " print(json.dumps(load_dynamic_config()))"
)


def seed_load_in_another_process(config: Path) -> subprocess.CompletedProcess[str]:
    """The seed's `load_dynamic_config()` as a script of its own runs it (CONFIG_PATH only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONFIG_", "CALLS_"))}
    env["CONFIG_PATH"] = str(config)
    return subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", SEED_LOAD],
        cwd=config.parent,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_config_json_stays_in_place_while_a_write_replaces_an_unreadable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store moved an unreadable config.json aside before it wrote the fresh one: while
    that write ran (its fsync; a disk that stalls) there was no config.json, and the seed's
    load_dynamic_config() in another process took the missing file for none yet and wrote
    one of its own (it waited for the writers' lock, then failed: "is held by"). Now the
    unreadable file stays config.json until the fresh one replaces it, and a copy of it is
    kept aside."""
    config = tmp_path / "config.json"
    config.write_bytes(CORRUPT)
    paused, go = threading.Event(), threading.Event()
    real = config_store_module._write_durably

    def pausing(path: Path, data: bytes, mode: int = 0o600) -> None:
        if path.name.startswith(".config.json.tmp-") and not paused.is_set():
            paused.set()
            go.wait(30)
        real(path, data, mode)

    monkeypatch.setattr(config_store_module, "_write_durably", pausing)
    store = ConfigStore(config)
    writer = threading.Thread(target=store.update, args=("Ann", "Hi"), kwargs={"call_id": "c-1"})
    writer.start()
    try:
        assert paused.wait(10)
        assert config.read_bytes() == CORRUPT  # still there while the fresh file is written
        seen = seed_load_in_another_process(config)
        assert json.loads(seen.stdout)["caller_name"] == "Guest"  # the seed's defaults
        assert "held by" not in seen.stderr and "failed" not in seen.stderr, seen.stderr
    finally:
        go.set()
        writer.join(30)
    assert json.loads(config.read_bytes())["calls"]["c-1"]["caller_name"] == "Ann"
    (aside,) = tmp_path.glob("config.json.corrupt-*")
    assert aside.read_bytes() == CORRUPT
    assert os.stat(aside).st_nlink == 1  # config.json is the fresh file now


def test_a_failed_write_leaves_the_unreadable_config_json_where_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that failed after moving an unreadable config.json aside (a full disk) left
    no config.json at all, for good: the seed's readers then wrote one of their own. Now the
    file stays as it was, kept aside once however often the write fails, and the next write
    that succeeds replaces it."""
    config = tmp_path / "config.json"
    config.write_bytes(CORRUPT)
    real = config_store_module._write_durably
    full = True

    def filling(path: Path, data: bytes, mode: int = 0o600) -> None:
        if full and path.name.startswith(".config.json.tmp-"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data, mode)

    monkeypatch.setattr(config_store_module, "_write_durably", filling)
    store = ConfigStore(config)
    for _ in range(3):
        with pytest.raises(ConfigWriteError):
            store.update("Ann", "Hi", call_id="c-1")
        assert config.read_bytes() == CORRUPT
    (aside,) = tmp_path.glob("config.json.corrupt-*")
    assert aside.read_bytes() == CORRUPT
    full = False
    store.update("Ann", "Hi", call_id="c-1")
    assert json.loads(config.read_bytes())["calls"]["c-1"]["caller_name"] == "Ann"
    assert list(tmp_path.glob("config.json.corrupt-*")) == [aside]
    assert aside.read_bytes() == CORRUPT


def test_where_no_hard_link_can_be_made_a_copy_is_kept_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without hard links (or another user's config.json under
    fs.protected_hardlinks): the unreadable file is copied aside, its mode kept."""
    config = tmp_path / "config.json"
    config.write_bytes(CORRUPT)
    config.chmod(0o640)

    def no_link(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_link)
    ConfigStore(config).update("Ann", "Hi", call_id="c-1")
    (aside,) = tmp_path.glob("config.json.corrupt-*")
    assert aside.read_bytes() == CORRUPT
    assert aside.stat().st_mode & 0o777 == 0o640
    assert json.loads(config.read_bytes())["calls"]["c-1"]["caller_name"] == "Ann"
    assert config.stat().st_mode & 0o777 == 0o640
