"""The seed's config API over real files: defaults, completeness, validation, corruption."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import json
import logging
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common.config_store import store as config_store_module
from common.config_store.store import KEEP_SET_ASIDE, LOCK_POLL_MAX_S
from common.update_config import (
    ConfigStore,
    ConfigWriteError,
    UnknownCallError,
    get_config_value,
    get_config_value_async,
    load_dynamic_config,
    load_dynamic_config_async,
    remove_call_config,
    update_config,
    update_config_async,
)


def read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.mark.usefixtures("default_store")
def test_seed_unit_test_as_written() -> None:
    # The seed's own unit test, as written there, import line included.
    from voice_backend.outboundService.common.update_config import (
        load_dynamic_config,
        update_config,
    )

    config = update_config(
        caller_name="Test User",
        agent_instructions="Test instructions",
        tts_language="en",
        tts_emotion="Calm",
    )

    assert config["caller_name"] == "Test User"

    loaded = load_dynamic_config()
    assert loaded["caller_name"] == "Test User"


@pytest.mark.parametrize("text", ["this is not json", "[]", "null", "# note\n{}"])
def test_the_seeds_functions_in_a_script_read_an_unusable_config_json_as_defaults(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    text: str,
) -> None:
    """The seed: "Invalid JSON: Logs error and uses fallback defaults". Used in a script (no
    configure_store: CONFIG_PATH read from the settings at first use), load_dynamic_config()
    and get_config_value() raised SettingsError for a config.json that did not begin with
    "{"; a server still refuses to start on one (test_settings)."""
    from common import update_config as module

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("CONFIG_PATH", str(tmp_path / "config.json"))
    monkeypatch.setattr(module, "_default_store", None)
    (tmp_path / "config.json").write_text(text)
    with caplog.at_level(logging.ERROR):
        assert load_dynamic_config()["caller_name"] == "Guest"
        assert get_config_value("tts_emotion", default="Calm") == "Calm"
    assert any("using defaults" in r.getMessage() for r in caplog.records)
    update_config(caller_name="Ann", agent_instructions="Hi")  # a fresh file; the old kept
    assert load_dynamic_config()["caller_name"] == "Ann"
    (aside,) = tmp_path.glob("config.json.corrupt-*")
    assert aside.read_text() == text


def test_the_seeds_import_path_is_the_same_module() -> None:
    """One module under both names: one config store, whichever name imported it first."""
    from common import update_config as ours
    from voice_backend.outboundService.common import update_config as seeds

    assert seeds is ours


@pytest.mark.usefixtures("default_store")
async def test_seed_async_api_and_get_config_value() -> None:
    config = await update_config_async(
        caller_name="John Doe",
        agent_instructions="You are a sales assistant.",
        tts_language="en",
        tts_emotion="Excited",
        additional_params={"campaign_id": "CAMP123"},
    )
    assert config["tts_emotion"] == "Excited"
    assert get_config_value("tts_emotion", default="Calm") == "Excited"
    assert await get_config_value_async("campaign_id") == "CAMP123"
    assert get_config_value("missing", default="x") == "x"
    loaded = await load_dynamic_config_async()
    assert loaded["campaign_id"] == "CAMP123"  # flattened, as the seed's advanced usage reads it
    assert "calls" not in loaded


def test_missing_file_created_with_defaults(store: ConfigStore, config_path: Path) -> None:
    assert not config_path.exists()
    loaded = store.load()
    assert loaded["caller_name"] == "Guest"
    assert loaded["agent_instructions"] == "You are a helpful assistant."
    assert loaded["tts_language"] == "en"
    assert loaded["tts_emotion"] == "Calm"
    on_disk = read(config_path)
    assert on_disk["caller_name"] == "Guest"
    assert on_disk["calls"] == {}


def test_file_format_flat_latest_plus_calls(store: ConfigStore, config_path: Path) -> None:
    store.update("Alice", "Coach cricket.", "EN", "excited", call_id="call-a")
    store.update("Carlos", None, "es", "Calm", {"tier": "Premium"}, call_id="call-b")
    doc = read(config_path)
    assert doc["caller_name"] == "Carlos"
    assert doc["tier"] == "Premium"
    assert isinstance(doc["last_updated"], float)
    assert set(doc["calls"]) == {"call-a", "call-b"}
    a = doc["calls"]["call-a"]
    assert (a["caller_name"], a["tts_language"], a["tts_emotion"]) == ("Alice", "en", "Excited")
    assert a["call_id"] == "call-a" and isinstance(a["written_at"], float)


async def retraction_fails_while_locked(store: ConfigStore, call_id: str) -> None:
    """`call_id`'s retraction, while another process holds config.json's lock: it fails (and
    is owed), and the service's `placed` follows, as in `CallService.place`."""
    holder = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(ConfigWriteError):
            await store.retract_call_async(call_id)
        store.placed(call_id)
    finally:
        os.close(holder)


def full_disk_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next durable write of config.json fails as on a full disk; the ones after work."""
    real = config_store_module._write_durably
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def full_once(path: Path, data: bytes, *args: Any) -> None:
        if failures:
            raise failures.pop()
        real(path, data, *args)

    monkeypatch.setattr(config_store_module, "_write_durably", full_once)


async def test_a_refused_call_gives_the_latest_config_back(
    store: ConfigStore, config_path: Path
) -> None:
    """A call refused after its write (a limit or an Idempotency-Key another request took
    meanwhile) left the seed's flat document naming it: `load_dynamic_config()` answered a
    caller nobody called while another call was live."""
    await store.update_async("Placed", call_id="call-a", placing=True)
    store.placed("call-a")
    latest = {k: v for k, v in read(config_path).items() if k != "calls"}
    await store.update_async("Refused", call_id="call-b", placing=True)
    assert read(config_path)["caller_name"] == "Refused"
    assert await store.retract_call_async("call-b") is True
    doc = read(config_path)
    assert set(doc["calls"]) == {"call-a"}
    assert {k: v for k, v in doc.items() if k != "calls"} == latest  # last_updated included
    # Two refused in a row, taken back out of order: the placed call's document comes back.
    await store.update_async("First refused", call_id="call-c", placing=True)
    await store.update_async("Second refused", call_id="call-d", placing=True)
    await store.retract_call_async("call-c")
    assert read(config_path)["caller_name"] == "Second refused"  # still the latest write
    await store.retract_call_async("call-d")
    assert read(config_path)["caller_name"] == "Placed"
    # A write after the refused one stays: the refused call no longer is the latest.
    await store.update_async("Refused again", call_id="call-e", placing=True)
    await store.update_async("Seed script")
    await store.retract_call_async("call-e")
    assert read(config_path)["caller_name"] == "Seed script"
    assert store._tops_before == {}


async def test_a_refused_call_placed_alike_with_another_leaves_that_ones_latest(
    store: ConfigStore, config_path: Path
) -> None:
    """Two calls placed at once with the same settings share one group write: their flat
    documents are equal, last_updated included. Taken back by value, the refused one found
    "its" document on top and put back the one before both, though the other call is live
    and its write the latest (review AG)."""
    await store.update_async("Earlier", call_id="call-0", placing=True)
    store.placed("call-0")
    await asyncio.gather(
        store.update_async("Same", call_id="call-a", placing=True),
        store.update_async("Same", call_id="call-b", placing=True),
    )
    store.placed("call-b")
    await store.retract_call_async("call-a")
    assert read(config_path)["caller_name"] == "Same"
    assert set(read(config_path)["calls"]) == {"call-0", "call-b"}


async def test_a_refused_call_after_another_write_failed_gives_the_latest_back(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A third call's write failed (the disk full for a moment) before the refused call was
    taken back: the store read config.json anew and no longer knew whose write the flat
    document was, and it kept naming the refused call (review AH). It compares by value
    then."""
    await store.update_async("Placed A", call_id="call-a", placing=True)
    store.placed("call-a")
    await store.update_async("Refused R", call_id="call-r", placing=True)
    full_disk_once(monkeypatch)
    with pytest.raises(ConfigWriteError):
        await store.update_async("Failed C", call_id="call-c", placing=True)
    store.placed("call-c")  # as the service does when its write left no record
    assert await store.retract_call_async("call-r") is True
    doc = read(config_path)
    assert doc["caller_name"] == "Placed A" and set(doc["calls"]) == {"call-a"}


async def test_a_retraction_whose_write_failed_is_made_later(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process held config.json's lock through a burst of refusals: each refused
    call's retraction failed, and the flat document named a refused call for good (probe AK).
    An owed retraction joins the next write, or gets its own RETRACT_AGAIN_S later."""
    monkeypatch.setattr(config_store_module, "LOCK_WAIT_S", 0.2)
    monkeypatch.setattr(config_store_module, "RETRACT_AGAIN_S", 0.3)
    await store.update_async("Placed A", call_id="call-a", placing=True)
    store.placed("call-a")
    placed = {k: v for k, v in read(config_path).items() if k != "calls"}
    for refused in ("call-r", "call-s"):
        await store.update_async(f"Refused {refused}", call_id=refused, placing=True)
    for refused in ("call-s", "call-r"):
        await retraction_fails_while_locked(store, refused)
    assert read(config_path)["caller_name"] == "Refused call-s"
    await asyncio.sleep(0.6)  # no other write came: the retractions' own
    doc = read(config_path)
    assert set(doc["calls"]) == {"call-a"}
    assert {k: v for k, v in doc.items() if k != "calls"} == placed
    assert store._tops_before == {} and store._owed == set()

    # With another write before the retry: they join it (the seed's "latest" is that write).
    await store.update_async("Refused T", call_id="call-t", placing=True)
    await retraction_fails_while_locked(store, "call-t")
    await store.update_async("Placed B", call_id="call-b", placing=True)
    store.placed("call-b")
    doc = read(config_path)
    assert doc["caller_name"] == "Placed B" and set(doc["calls"]) == {"call-a", "call-b"}
    assert store._tops_before == {} and store._owed == set()


async def test_an_owed_retraction_after_a_full_disk_gives_the_latest_back(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk full fails the write after the retraction was applied to the document: what
    the refused call's write replaced was forgotten then, and the retry only dropped the
    record (review AM)."""
    monkeypatch.setattr(config_store_module, "RETRACT_AGAIN_S", 0.1)
    await store.update_async("Placed A", call_id="call-a", placing=True)
    store.placed("call-a")
    placed = {k: v for k, v in read(config_path).items() if k != "calls"}
    await store.update_async("Refused R", call_id="call-r", placing=True)
    full_disk_once(monkeypatch)
    with pytest.raises(ConfigWriteError):
        await store.retract_call_async("call-r")
    store.placed("call-r")
    await asyncio.sleep(0.4)
    doc = read(config_path)
    assert set(doc["calls"]) == {"call-a"}
    assert {k: v for k, v in doc.items() if k != "calls"} == placed
    assert store._tops_before == {} and store._owed == set()


async def test_an_owed_retraction_made_with_a_placing_calls_write_goes_first(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owed retraction joined the next placing call's write after it: that call noted the
    refused call's document as the one it replaced, and when it was refused too it gave that
    back (review AN)."""
    monkeypatch.setattr(config_store_module, "RETRACT_AGAIN_S", 60.0)  # the next write takes it
    await store.update_async("Placed A", call_id="call-a", placing=True)
    store.placed("call-a")
    await store.update_async("Refused R", call_id="call-r", placing=True)
    full_disk_once(monkeypatch)
    with pytest.raises(ConfigWriteError):
        await store.retract_call_async("call-r")
    store.placed("call-r")
    await store.update_async("Refused D", call_id="call-d", placing=True)
    assert set(read(config_path)["calls"]) == {"call-a", "call-d"}  # R's went first
    await store.retract_call_async("call-d")
    store.placed("call-d")
    assert read(config_path)["caller_name"] == "Placed A"


async def test_an_owed_retraction_does_not_hold_back_a_finished_calls_removal(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_store_module, "LOCK_WAIT_S", 0.1)
    await store.update_async("Done D", call_id="call-d")
    await store.update_async("Refused R", call_id="call-r", placing=True)
    await retraction_fails_while_locked(store, "call-r")
    store.forget_call_soon("call-d", within_s=0.05)  # within its own time, not RETRACT_AGAIN_S
    await asyncio.sleep(0.5)
    assert set(read(config_path)["calls"]) == set()  # the owed retraction went with it


def test_records_complete_and_independent(store: ConfigStore) -> None:
    store.update("Alice", "Custom instructions", "fr", "Serious", {"x": 1}, call_id="call-a")
    b = store.update("Bob", call_id="call-b")
    # Bob's fields that were not given take the defaults, never Alice's values.
    assert b["agent_instructions"] == "You are a helpful assistant."
    assert b["tts_language"] == "en" and b["tts_emotion"] == "Calm"
    assert "x" not in b and b["additional_params"] == {}
    assert store.load(call_id="call-a")["caller_name"] == "Alice"
    assert store.load(call_id="call-a")["tts_language"] == "fr"
    latest = store.load()
    assert latest["caller_name"] == "Bob" and "x" not in latest


def test_unknown_call_raises_never_other_values(store: ConfigStore) -> None:
    store.update("Alice", call_id="call-a")
    with pytest.raises(UnknownCallError) as err:
        store.load(call_id="call-zzz")
    assert isinstance(err.value, KeyError)
    assert "call-zzz" in str(err.value)
    with pytest.raises(UnknownCallError):
        store.get("caller_name", call_id="call-zzz")


@pytest.mark.parametrize(
    ("language", "emotion", "needle"),
    [("xx", "Calm", "tts_language"), ("en", "Furious", "tts_emotion"), ("", "Calm", "allowed")],
)
def test_bad_language_or_emotion_rejected_nothing_written(
    store: ConfigStore, config_path: Path, language: str, emotion: str, needle: str
) -> None:
    store.update("Alice", call_id="call-a")
    before = config_path.read_bytes()
    with pytest.raises(ValueError, match=needle) as err:
        store.update("Bob", None, language, emotion, call_id="call-b")
    assert "allowed" in str(err.value)
    assert config_path.read_bytes() == before


def test_reserved_additional_params_rejected(store: ConfigStore) -> None:
    with pytest.raises(ValueError, match="reserved"):
        store.update("Bob", additional_params={"caller_name": "Mallory"})
    with pytest.raises(ValueError, match="reserved"):
        store.update("Bob", additional_params={"calls": {}})


def test_corrupt_file_kept_aside(
    store: ConfigStore, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path.write_text("{not json")
    config_path.chmod(0o640)  # the README's way to let an agent of another user read it
    with caplog.at_level(logging.ERROR):
        assert store.load()["caller_name"] == "Guest"
    assert any(str(config_path) in r.getMessage() for r in caplog.records)
    store.update("Alice", call_id="call-a")
    aside = list(config_path.parent.glob("config.json.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_text() == "{not json"
    assert read(config_path)["caller_name"] == "Alice"
    # The fresh file keeps the mode of the one it replaced (probe AO: 0600, the agent locked
    # out).
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o640


@pytest.mark.parametrize("text", ["", "\n", "  \r\n\t"])
def test_an_empty_config_json_is_none_yet(
    store: ConfigStore, config_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    """Regression: a config.json made empty (`touch config.json`, as the seed's "check that
    config.json exists" may have a user do, or `: > config.json` to reset it) read with an
    ERROR "is not valid JSON", and the next write (a server's start-up among them) said
    "unreadable; kept aside" and kept an empty `config.json.corrupt-*` of it. It is now what
    a missing file is: the defaults, and the next write writes a fresh document."""
    config_path.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert store.load() == store.load() and store.load()["caller_name"] == "Guest"
        assert store.get("tts_emotion", "x") == "Calm"
        store.update("Alice", call_id="call-a")
    assert read(config_path)["caller_name"] == "Alice"
    assert store.load(call_id="call-a")["caller_name"] == "Alice"
    assert list(config_path.parent.glob("config.json.corrupt-*")) == []
    assert [r.getMessage() for r in caplog.records] == []


def test_non_object_json_kept_aside(store: ConfigStore, config_path: Path) -> None:
    config_path.write_text("[1, 2, 3]")
    assert store.load()["tts_emotion"] == "Calm"
    store.update("Alice")
    assert len(list(config_path.parent.glob("config.json.corrupt-*"))) == 1


def test_prune_by_ttl_and_removal(config_path: Path) -> None:
    now = [1000.0]
    store = ConfigStore(config_path, record_ttl_s=60, clock=lambda: now[0])
    store.update("Old", call_id="call-old")
    now[0] += 61
    store.update("New", call_id="call-new")
    assert set(read(config_path)["calls"]) == {"call-new"}
    assert store.remove_call("call-new") is True
    assert store.remove_call("call-new") is False
    assert read(config_path)["calls"] == {}


@pytest.mark.usefixtures("default_store")
def test_module_remove_call_config() -> None:
    update_config("A", call_id="call-a")
    assert remove_call_config("call-a")
    with pytest.raises(UnknownCallError):
        load_dynamic_config(call_id="call-a")


async def test_async_group_commit_each_caller_gets_its_own_record(
    store: ConfigStore, config_path: Path
) -> None:
    names = [f"Caller {i}" for i in range(40)]
    results = await asyncio.gather(
        *(store.update_async(n, call_id=f"call-{i}") for i, n in enumerate(names))
    )
    assert [r["caller_name"] for r in results] == names
    calls = read(config_path)["calls"]
    assert {calls[f"call-{i}"]["caller_name"] for i in range(40)} == set(names)
    assert (await store.load_async(call_id="call-7"))["caller_name"] == "Caller 7"
    assert await store.remove_call_async("call-7")


def test_an_event_loop_that_wrote_is_not_kept(store: ConfigStore) -> None:
    """Each event loop that ever wrote through a store stayed alive with it (its batch's
    finished drain task held the loop): a script or worker calling
    `asyncio.run(update_config_async(...))` per update grew by a loop each time, for good."""

    async def write(n: int) -> weakref.ref[asyncio.AbstractEventLoop]:
        await store.update_async(f"Caller {n}", call_id=f"call-{n}")
        await store.remove_call_async(f"call-{n}")
        return weakref.ref(asyncio.get_running_loop())

    loops = [asyncio.run(write(n)) for n in range(3)]
    gc.collect()
    assert [loop() for loop in loops] == [None, None, None]
    assert store.load()["caller_name"] == "Caller 2"


def _count_writes(store: ConfigStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many durable writes the store makes from now on (each entry: mutations in it)."""
    writes: list[int] = []
    real = store._mutate_sync

    def counted(mutations: list[Any], deadline: float | None = None) -> list[Any]:
        writes.append(len(mutations))
        return real(mutations, deadline)

    monkeypatch.setattr(store, "_mutate_sync", counted)
    return writes


async def test_forget_call_soon_joins_the_next_write(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.update_async("Ended", call_id="call-ended")
    writes = _count_writes(store, monkeypatch)
    store.forget_call_soon("call-ended", within_s=30.0)
    assert "call-ended" in read(config_path)["calls"]  # nothing written yet
    await store.update_async("Next", call_id="call-next")
    assert sorted(read(config_path)["calls"]) == ["call-next"]
    assert writes == [2]  # one write: the new record and the removal together
    await asyncio.sleep(0.05)
    assert writes == [2]  # and its timer was cancelled: no write of its own later


async def test_forget_call_soon_writes_alone_within_its_bound(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for call_id in ("call-a", "call-b", "call-c"):
        await store.update_async("Someone", call_id=call_id)
    writes = _count_writes(store, monkeypatch)
    store.forget_call_soon("call-a", within_s=0.2)
    store.forget_call_soon("call-b", within_s=0.2)
    await asyncio.sleep(0.1)
    assert writes == [] and len(read(config_path)["calls"]) == 3
    for _ in range(100):  # bounded: 2 s
        if len(read(config_path)["calls"]) < 3:
            break
        await asyncio.sleep(0.02)
    assert sorted(read(config_path)["calls"]) == ["call-c"]
    assert writes == [1]  # both removals in one write


async def test_flush_writes_held_back_removals_now(store: ConfigStore, config_path: Path) -> None:
    await store.update_async("Ended", call_id="call-ended")
    store.forget_call_soon("call-ended", within_s=60.0)
    await store.flush_async()
    assert read(config_path)["calls"] == {}
    await store.flush_async()  # nothing held: nothing to do


async def test_a_failed_held_back_removal_is_logged_not_raised(
    store: ConfigStore,
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno
    import os

    await store.update_async("Ended", call_id="call-ended")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    store.forget_call_soon("call-ended", within_s=0.0)
    with caplog.at_level(logging.ERROR):
        await store.flush_async()
    assert "could not remove finished calls' config records" in caplog.text
    monkeypatch.undo()
    assert "call-ended" in read(config_path)["calls"]  # left for the reaper's prune
    await store.update_async("Next", call_id="call-next")  # the store still writes
    assert sorted(read(config_path)["calls"]) == ["call-ended", "call-next"]


async def test_async_write_does_not_block_the_loop(
    store: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.3)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    await store.update_async("Slow", call_id="call-slow")
    elapsed = time.monotonic() - started
    task.cancel()
    assert elapsed >= 0.3  # the slow fsync really ran
    # The loop kept ticking while the write waited on the disk (a blocked loop ticks ~0 times).
    assert ticks >= 10


async def test_write_failure_raises_and_leaves_old_file(
    store: ConfigStore, config_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    store.update("Alice", call_id="call-a")
    before = config_path.read_bytes()

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ConfigWriteError, match="No space left"):
        await store.update_async("Bob", call_id="call-b")
    with pytest.raises(ConfigWriteError):
        store.update("Bob", call_id="call-b")
    monkeypatch.undo()
    assert config_path.read_bytes() == before
    assert [p.name for p in config_path.parent.iterdir() if ".tmp-" in p.name] == []


def test_info_logs_seed_lines_and_no_long_instructions(
    store: ConfigStore, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = "Secret plan " * 50
    with caplog.at_level(logging.INFO, logger="common.config_store.store"):
        store.update("John Doe", long_text, "en", "Calm", call_id="call-x")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    # One event, one line (JSON logs included): the seed's fields on it, call id as a field.
    assert lines == [
        "✓ Configuration updated successfully (call call-x) - Caller Name: John Doe"
        " - TTS Language: en - TTS Emotion: Calm"
    ]
    assert [getattr(r, "call_id", None) for r in caplog.records] == ["call-x"]
    assert "Secret plan" not in "\n".join(lines)


# ----------------------------------------------------------------------------- symbolic links


def linked_store(tmp_path: Path, *, dangling: bool = False) -> tuple[ConfigStore, Path, Path]:
    """A store given `config.json` as a link to a file in another directory (a volume)."""
    volume = tmp_path / "volume"
    volume.mkdir()
    target = volume / "real-config.json"
    if not dangling:
        ConfigStore(target).update(caller_name="Before")
    link = tmp_path / "app" / "config.json"
    link.parent.mkdir()
    link.symlink_to(target)
    return ConfigStore(link), link, target


@pytest.mark.parametrize("dangling", [False, True], ids=["target exists", "dangling link"])
def test_a_linked_config_json_stays_a_link_and_its_file_is_written(
    tmp_path: Path, dangling: bool
) -> None:
    """A write replaces the file the link leads to, not the link: before, the first write
    put a plain file in the link's place and the volume's file was never written again."""
    store, link, target = linked_store(tmp_path, dangling=dangling)
    store.update(caller_name="Linked", call_id="call-0123456789ab")
    store.update(caller_name="Again")
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert read(target)["caller_name"] == "Again"
    assert read(target)["calls"]["call-0123456789ab"]["caller_name"] == "Linked"
    assert store.load()["caller_name"] == "Again"
    # The lock and temp files are the target's, beside it; nothing is left beside the link.
    assert sorted(p.name for p in link.parent.iterdir()) == ["config.json"]
    assert sorted(p.name for p in target.parent.iterdir()) == [
        "real-config.json",
        "real-config.json.lock",
    ]


def test_writers_given_the_link_and_the_file_share_one_lock(tmp_path: Path) -> None:
    """Two writers, one given the link and one the file, each adding records at once from
    its own thread: no record is lost (they take the same lock beside the file)."""
    via_link, _link, target = linked_store(tmp_path)
    direct = ConfigStore(target)
    assert via_link.lock_path == direct.lock_path

    def write(store: ConfigStore, prefix: str) -> None:
        for n in range(40):
            store.update(caller_name=prefix, call_id=f"call-{prefix}{n:011d}")

    threads = [
        threading.Thread(target=write, args=(via_link, "a")),
        threading.Thread(target=write, args=(direct, "b")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(read(target)["calls"]) == 80


def test_a_link_to_a_directory_is_refused_by_the_probe(tmp_path: Path) -> None:
    link = tmp_path / "config.json"
    (tmp_path / "dir").mkdir()
    link.symlink_to(tmp_path / "dir")
    with pytest.raises(OSError):
        asyncio.run(ConfigStore(link).probe_writable_async())
    assert link.is_symlink()


def test_a_link_re_pointed_after_start_up_sends_no_write_elsewhere(tmp_path: Path) -> None:
    """The link is resolved once: whoever can write its directory and re-points it (to
    /etc/hosts, say) does not get the server to move that file aside and replace it."""
    store, link, target = linked_store(tmp_path)
    elsewhere = tmp_path / "hosts"
    elsewhere.write_text("127.0.0.1 localhost\n")
    link.unlink()
    link.symlink_to(elsewhere)
    with pytest.raises(ConfigWriteError, match="no longer leads to"):
        store.update(caller_name="Not There")
    assert elsewhere.read_text() == "127.0.0.1 localhost\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app", "hosts", "volume"]
    assert read(target)["caller_name"] == "Before"


def test_a_link_where_the_file_was_is_refused_not_followed(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    store = ConfigStore(path)
    store.update(caller_name="Mine")
    elsewhere = tmp_path / "other.txt"
    elsewhere.write_text("not yours\n")
    path.unlink()
    path.symlink_to(elsewhere)
    with pytest.raises(ConfigWriteError, match="symbolic link"):
        store.update(caller_name="Again")
    assert elsewhere.read_text() == "not yours\n" and path.is_symlink()
    with pytest.raises(OSError):
        asyncio.run(store.probe_writable_async())


def test_a_fifo_as_config_json_blocks_nobody(tmp_path: Path) -> None:
    """A FIFO would block a reader (and a writer, holding the lock) for good; it was also
    moved aside and replaced. It is refused, at once, and left where it is."""
    import os
    import stat

    path = tmp_path / "config.json"
    os.mkfifo(path)
    store = ConfigStore(path)

    def attempts() -> list[str]:
        seen = []
        for attempt in (
            lambda: store.update(caller_name="X"),
            store.load,
            lambda: asyncio.run(store.probe_writable_async()),
        ):
            try:
                attempt()
            except OSError as exc:
                seen.append(type(exc).__name__)
        return seen

    done: list[list[str]] = []
    worker = threading.Thread(target=lambda: done.append(attempts()), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done == [["ConfigWriteError", "OSError", "OSError"]]
    assert stat.S_ISFIFO(path.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "config.json.lock"]


@pytest.mark.parametrize("read", ["load", "get", "load_async"])
def test_a_directory_as_config_json_is_named_on_read(tmp_path: Path, read: str) -> None:
    """Reads raised a bare `IsADirectoryError: [Errno 21] Is a directory: 3` (a descriptor,
    not the path); now the store's own "not a regular file" error, naming the file."""
    path = tmp_path / "config.json"
    path.mkdir()
    store = ConfigStore(path)
    calls: dict[str, Callable[[], object]] = {
        "load": store.load,
        "get": lambda: store.get("caller_name", "default"),
        "load_async": lambda: asyncio.run(store.load_async()),
    }
    with pytest.raises(OSError, match="not a regular file") as raised:
        calls[read]()
    assert raised.value.filename == str(path)


def test_a_link_into_a_missing_directory_makes_no_directories(tmp_path: Path) -> None:
    """A link into a volume that is not mounted: its directories were made on the root
    file system, and the config written where the mounted volume would then hide it."""
    link = tmp_path / "config.json"
    link.symlink_to(tmp_path / "volume" / "sub" / "config.json")
    store = ConfigStore(link)
    with pytest.raises(ConfigWriteError, match="missing directory"):
        store.update(caller_name="X")
    with pytest.raises(OSError, match="missing directory"):
        asyncio.run(store.probe_writable_async())
    assert not (tmp_path / "volume").exists()


def test_a_link_loop_is_not_ready(tmp_path: Path) -> None:
    link = tmp_path / "config.json"
    link.symlink_to(link)
    store = ConfigStore(link)
    with pytest.raises(OSError):
        asyncio.run(store.probe_writable_async())
    with pytest.raises(ConfigWriteError):
        store.update(caller_name="X")
    assert link.is_symlink()


@pytest.mark.parametrize("change", ["replaced by a plain file", "its directory link swapped"])
def test_a_link_changed_since_start_up_stops_writes_loudly(tmp_path: Path, change: str) -> None:
    """`sed -i` on the link (a plain file in its place), or a directory link swapped to a new
    release: writing on to the old file split the config, writes going to one file and every
    reader to another. Writes and the readiness probe now refuse until a restart follows."""
    releases = tmp_path / "releases"
    (releases / "v1").mkdir(parents=True)
    (releases / "v2").mkdir()
    current = tmp_path / "current"
    current.symlink_to(releases / "v1")
    link = tmp_path / "config.json"
    link.symlink_to(current / "config.json")
    store = ConfigStore(link)
    store.update(caller_name="Alice")
    if change == "replaced by a plain file":
        link.unlink()
        link.write_text(json.dumps({"caller_name": "Bob"}))
    else:
        current.unlink()
        current.symlink_to(releases / "v2")
    with pytest.raises(ConfigWriteError, match="no longer leads to"):
        store.update(caller_name="Carol")
    with pytest.raises(OSError, match="no longer leads to"):
        asyncio.run(store.probe_writable_async())
    assert read(releases / "v1" / "config.json")["caller_name"] == "Alice"  # untouched
    assert ConfigStore(link).update(caller_name="Dave")["caller_name"] == "Dave"  # a restart


def test_a_path_that_cannot_be_looked_at_fails_its_writes_not_the_store(tmp_path: Path) -> None:
    """A name too long (or a directory not searchable) made the store's constructor raise,
    a traceback at start-up; the write and the readiness probe say it instead."""
    store = ConfigStore(tmp_path / ("x" * 300) / "config.json")
    with pytest.raises(ConfigWriteError):
        store.update(caller_name="X")
    with pytest.raises(OSError):
        asyncio.run(store.probe_writable_async())


async def test_the_probe_clears_a_crashed_writers_temp_file_and_leaves_none_to_warn_of(
    store: ConfigStore, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A writer killed between its temp file and the rename leaves callers' names and
    instructions in it: the probe (at start-up, and /readyz) removes it, not only the next
    write. The probe's own file was named as a writer's: the next writer took it for a
    crash's leftover and warned (471 false warnings in 15 s under /readyz polling)."""
    store.update("Alice", call_id="call-a")
    left = config_path.with_name(f".{config_path.name}.tmp-99999-deadbeef")
    left.write_text('{"calls": {"call-x": {"caller_name": "Secret"}}}')
    old_probe = config_path.with_name(f".{config_path.name}.probe-99999-deadbeef")
    old_probe.write_text("\n")
    os.utime(old_probe, (time.time() - 3600, time.time() - 3600))
    fresh_probe = config_path.with_name(f".{config_path.name}.probe-99998-deadbeef")
    fresh_probe.write_text("\n")  # a probe of another process, running now
    with caplog.at_level(logging.WARNING):
        await store.probe_writable_async()
        assert not left.exists() and not old_probe.exists() and fresh_probe.exists()
        caplog.clear()
        fresh_probe.unlink()
        for n in range(20):  # probes and writes interleaved: no leftover to speak of
            await asyncio.gather(
                store.probe_writable_async(), store.update_async(f"C{n}", call_id=f"call-{n}")
            )
    assert not [r for r in caplog.records if "leftover" in r.getMessage()]
    left_over = [p.name for p in config_path.parent.iterdir() if ".tmp-" in p.name]
    assert left_over + [p.name for p in config_path.parent.iterdir() if ".probe-" in p.name] == []


def test_a_writer_waiting_for_another_process_tries_again_often(
    store: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It slept up to 50 ms between tries while the lock is held ~1 ms a write: writers that
    had just come took it first, and with 24 writers in 6 processes a waiter failed after
    5 s. Here another process holds it for 40 tries; no pause between tries is over 5 ms."""
    store.update("Ann")
    holder = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 40:
            fcntl.flock(holder, fcntl.LOCK_UN)

    monkeypatch.setattr("common.config_store.store.time.sleep", pause)
    try:
        store.update("Bob")
    finally:
        os.close(holder)
    assert len(pauses) == 40 and max(pauses) <= LOCK_POLL_MAX_S
    assert store.load()["caller_name"] == "Bob"


def test_files_set_aside_are_kept_to_the_newest_few(
    store: ConfigStore, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every unreadable config.json set aside was kept for good: a writer that kept breaking
    the file piled up copies of callers' data without limit. Now the newest KEEP_SET_ASIDE
    are kept, a WARNING names those removed, and no other file is touched."""
    directory = config_path.parent
    others = [
        "config.json.corrupt-notes.txt",  # not our naming
        "config.json.corrupt-19990101T000000-zzzz",  # not our naming (hex)
        "other.json.corrupt-19990101T000000-abcd",  # another file's
        "config.json.lock",
    ]
    for name in others:
        (directory / name).write_text("keep me")
    (directory / "config.json.corrupt-19990101T000000-abcd").mkdir()  # not a file
    for n in range(KEEP_SET_ASIDE + 3):
        config_path.write_text(f"{{broken {n}")
        with caplog.at_level(logging.WARNING):
            store.update(f"Caller {n}", call_id=f"call-{n}")
    kept = sorted(directory.glob("config.json.corrupt-2*"))
    assert len(kept) == KEEP_SET_ASIDE
    # the newest ones: the last KEEP_SET_ASIDE files broken
    assert sorted(p.read_text() for p in kept) == sorted(
        f"{{broken {n}" for n in range(3, KEEP_SET_ASIDE + 3)
    )
    for name in others:
        assert (directory / name).read_text() == "keep me"
    assert (directory / "config.json.corrupt-19990101T000000-abcd").is_dir()
    said = [r.getMessage() for r in caplog.records if "older unreadable config" in r.getMessage()]
    assert len(said) == 3 and all(
        m.startswith("removed 1 older unreadable config file(s) set aside") for m in said
    )
    assert read(config_path)["caller_name"] == f"Caller {KEEP_SET_ASIDE + 2}"


def test_the_prune_line_says_what_was_removed_and_why(
    config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records removed because they were malformed were said to be "older than 86400 s" too:
    the line now counts each reason."""
    now = [1000.0]
    store = ConfigStore(config_path, record_ttl_s=60, clock=lambda: now[0])
    store.update("Old", call_id="call-old")
    doc = read(config_path)
    doc["calls"]["call-nan"] = {"caller_name": "N", "written_at": "yesterday"}
    doc["calls"]["call-list"] = ["not", "a", "record"]
    config_path.write_text(json.dumps(doc))
    now[0] += 61
    with caplog.at_level(logging.INFO):
        store.update("New", call_id="call-new")
    said = [r for r in caplog.records if r.getMessage().startswith("pruned")]
    assert [r.getMessage() for r in said] == [
        "pruned 3 config record(s): 1 older than 60 s,"
        " 2 malformed (no object with a finite written_at)"
    ]
    assert said[0].levelno == logging.WARNING
    assert set(read(config_path)["calls"]) == {"call-new"}
    caplog.clear()
    now[0] += 61
    with caplog.at_level(logging.INFO):
        store.update("Newer", call_id="call-newer")
    said = [r for r in caplog.records if r.getMessage().startswith("pruned")]
    assert [(r.getMessage(), r.levelno) for r in said] == [
        ("pruned 1 config record(s): 1 older than 60 s", logging.INFO)
    ]
