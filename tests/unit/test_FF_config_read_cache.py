"""A store that read config.json once reads each later version, even one the file system gives
the same inode, size and times as the one it read (ext2/3, and ext4 and XFS before Linux 6.13,
time files by the clock tick and reuse the inode a replace freed): the seed's
load_dynamic_config() in a long-lived process gave an earlier call's config.
tests/reliability/test_FF_config_read_cache_ext2.py shows it on a real ext2 file system."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from common.config_store.store import ConfigStore, UnknownCallError


class _SameIdentity:
    """A file's status with the inode, size and times of the first version read."""

    def __init__(self, real: os.stat_result) -> None:
        self._real = real

    st_ino = 4099
    st_size = 200
    st_mtime_ns = 1_796_537_109_002_573_950
    st_ctime_ns = 1_796_537_109_002_573_950

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextmanager
def coarse_file_system(monkeypatch: pytest.MonkeyPatch, path: Path) -> Iterator[None]:
    """Every version of the file at `path` looks alike to fstat for the block (as on a
    tick-timed file system that reuses inodes, when writes come within one tick); any other
    file as it is."""
    real_fstat, target = os.fstat, str(path.resolve())

    def fstat(fd: int) -> os.stat_result | _SameIdentity:
        status = real_fstat(fd)
        return _SameIdentity(status) if os.readlink(f"/proc/self/fd/{fd}") == target else status

    with monkeypatch.context() as patch:
        patch.setattr(os, "fstat", fstat)
        yield


def test_the_latest_config_is_read_though_the_file_looks_as_before(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = ConfigStore(config_path), ConfigStore(config_path)  # two processes
    writer.update("Caller 0001", "Sell shoes.", "en", "Calm")
    with coarse_file_system(monkeypatch, config_path):
        assert reader.load()["caller_name"] == "Caller 0001"
    writer.update("Caller 0002", "Sell hats.", "fr", "Excited")
    writer.update("Caller 0003", "Sell bags.", "de", "Serious")
    with coarse_file_system(monkeypatch, config_path):
        latest = reader.load()
        assert reader.get("tts_language") == "de"
    assert (latest["caller_name"], latest["agent_instructions"], latest["tts_emotion"]) == (
        "Caller 0003",
        "Sell bags.",
        "Serious",
    )


def test_a_calls_record_is_read_though_the_file_looks_as_before(
    config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = ConfigStore(config_path), ConfigStore(config_path)
    writer.update("Alice Smith", call_id="call-a")
    with coarse_file_system(monkeypatch, config_path):
        reader.load()  # the latest config: the whole document parsed and kept
    writer.update("Bob Jones", call_id="call-b")
    with coarse_file_system(monkeypatch, config_path):
        assert reader.load(call_id="call-b")["caller_name"] == "Bob Jones"
        with pytest.raises(UnknownCallError):
            reader.load(call_id="call-c")  # a full parse of the new version
    writer.remove_call("call-b")
    with coarse_file_system(monkeypatch, config_path):
        with pytest.raises(UnknownCallError):
            reader.load(call_id="call-b")


def test_an_unchanged_file_is_not_parsed_again(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.update("Alice Smith")
    first = store._read_sync()
    assert store._read_sync() is first  # the cache still saves the parse
