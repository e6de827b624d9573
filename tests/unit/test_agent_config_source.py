"""Which config a job uses: record vs dispatch snapshot vs refusal, with a real ConfigStore."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config_source import (
    NoCallConfigError,
    load_call_record,
    resolve_call_id,
    room_creation_time,
    select_config,
)
from common.config_store.model import CallConfig
from common.contracts import DispatchMetadata
from common.update_config import ConfigStore

CALL = "call-ab12cd34ef56"
ROOM_CREATED = 1_700_000_000.0


def record(
    name: str = "Alice Smith", *, call_id: str = CALL, written_at: float = ROOM_CREATED - 0.5
) -> dict[str, Any]:
    config = CallConfig.create(name, "You are a cricket coach.", "en", "Excited", call_id=call_id)
    return config.to_record(written_at)


def snapshot(name: str = "Alice Smith", *, call_id: str = CALL) -> dict[str, Any]:
    """The config the server put in the dispatch: the record it wrote, unless `name` differs."""
    return record(name, call_id=call_id, written_at=ROOM_CREATED - 0.5)


def test_record_older_than_the_room_is_used() -> None:
    selected = select_config(CALL, record(), snapshot(), ROOM_CREATED)
    assert selected.source == "config.json"
    assert selected.config.caller_name == "Alice Smith"


def test_a_record_changed_after_it_was_written_is_not_used() -> None:
    """A hand edit that kept written_at (or a file swapped under the server) was used as the
    call's config, silently: the dispatch carries the record the server wrote."""
    edited = {**record(), "caller_name": "Mallory Edited", "tts_language": "ja"}
    selected = select_config(CALL, edited, snapshot(), ROOM_CREATED)
    assert selected.source == "dispatch-metadata" and selected.record_changed
    assert selected.config.caller_name == "Alice Smith"
    assert "differs from the config the call was placed with" in selected.reason
    assert "(caller_name, tts_language)" in selected.reason
    injected = {**record(), "additional_params": {"injected": "yes"}}
    assert select_config(CALL, injected, snapshot(), ROOM_CREATED).record_changed
    same = select_config(CALL, record(), snapshot(), ROOM_CREATED)
    assert same.source == "config.json" and not same.record_changed
    # Without a snapshot to compare with, a record dated before the room is used as before.
    assert select_config(CALL, edited, None, ROOM_CREATED).source == "config.json"


def test_record_newer_than_the_room_falls_back_to_the_snapshot() -> None:
    late = record("Someone Else", written_at=ROOM_CREATED + 2.0)
    selected = select_config(CALL, late, snapshot("Alice Snapshot"), ROOM_CREATED)
    assert selected.source == "dispatch-metadata"
    assert selected.config.caller_name == "Alice Snapshot"
    assert "2.000 s after the room was created" in selected.reason


def test_missing_record_falls_back_to_the_snapshot() -> None:
    selected = select_config(CALL, None, snapshot("Alice Snapshot"), ROOM_CREATED)
    assert selected.source == "dispatch-metadata"
    assert selected.config.caller_name == "Alice Snapshot"
    assert "no config.json record" in selected.reason


def test_neither_record_nor_snapshot_is_refused() -> None:
    with pytest.raises(NoCallConfigError) as info:
        select_config(CALL, None, None, ROOM_CREATED)
    assert info.value.call_id == CALL
    assert "no config.json record" in str(info.value)
    assert "no config snapshot in the dispatch metadata" in str(info.value)


def test_late_record_without_snapshot_is_refused() -> None:
    with pytest.raises(NoCallConfigError, match="after the room was created"):
        select_config(CALL, record(written_at=ROOM_CREATED + 5), None, ROOM_CREATED)


def test_another_calls_record_or_snapshot_is_never_used() -> None:
    other = record("Bob Other", call_id="call-ffffffffffff")
    selected = select_config(CALL, other, snapshot(), ROOM_CREATED)
    assert selected.source == "dispatch-metadata"
    assert "belongs to call 'call-ffffffffffff'" in selected.reason
    with pytest.raises(NoCallConfigError, match="dispatch snapshot belongs to call"):
        select_config(CALL, None, snapshot(call_id="call-ffffffffffff"), ROOM_CREATED)


def test_unknown_room_creation_time_cannot_vouch_for_the_record() -> None:
    selected = select_config(CALL, record(), snapshot(), None)
    assert selected.source == "dispatch-metadata"
    assert "creation time unknown" in selected.reason


def test_record_without_written_at_or_invalid_is_not_used() -> None:
    undated = record()
    del undated["written_at"]
    assert select_config(CALL, undated, snapshot(), ROOM_CREATED).source == "dispatch-metadata"
    invalid = record() | {"tts_language": "xx"}
    selected = select_config(CALL, invalid, snapshot(), ROOM_CREATED)
    assert selected.source == "dispatch-metadata"
    assert "invalid" in selected.reason


def test_whole_second_creation_time_allows_its_truncation() -> None:
    # LiveKit reports creation_time = Unix() (truncated): a room reported as T was created in
    # [T, T+1), so a record written at T+0.6 may precede it.
    created = room_creation_time(int(ROOM_CREATED))
    assert (created.at, created.granularity_s) == (ROOM_CREATED, 1.0)
    rec = record(written_at=ROOM_CREATED + 0.6)
    selected = select_config(CALL, rec, snapshot(), created.at, granularity_s=created.granularity_s)
    assert selected.source == "config.json"
    # ... but never more than that one second.
    rec = record(written_at=ROOM_CREATED + 1.2)
    selected = select_config(CALL, rec, snapshot(), created.at, granularity_s=created.granularity_s)
    assert selected.source == "dispatch-metadata"


def test_millisecond_creation_time_is_preferred() -> None:
    created = room_creation_time(int(ROOM_CREATED), int(ROOM_CREATED * 1000) + 500)
    assert created.at == pytest.approx(ROOM_CREATED + 0.5)
    assert created.granularity_s == 0.001
    rec = record(written_at=ROOM_CREATED + 0.6)  # after the room, within the same second
    selected = select_config(CALL, rec, snapshot(), created.at, granularity_s=created.granularity_s)
    assert selected.source == "dispatch-metadata"


def test_room_creation_time_units() -> None:
    assert room_creation_time(0, 0).at is None
    # A seconds field holding milliseconds (year 55 000) is read as milliseconds.
    assert room_creation_time(int(ROOM_CREATED * 1000)).at == pytest.approx(ROOM_CREATED)


def test_dispatch_metadata_parsing() -> None:
    raw = json.dumps({"call_id": CALL, "config": snapshot(), "phone_number": "+1234567890"})
    meta = DispatchMetadata.parse(raw)
    assert meta.call_id == CALL and meta.phone_number == "+1234567890"
    assert meta.config is not None and meta.config["caller_name"] == "Alice Smith"
    for bad in ("", "not json", "[1, 2]", '{"call_id": 5, "config": "x"}'):
        assert DispatchMetadata.parse(bad) == DispatchMetadata()


def test_the_call_id_is_the_rooms_and_metadata_naming_another_call_is_refused() -> None:
    """A dispatch whose metadata names call A in call B's room would build B's session from
    A's config and file B's reports under A: the job is refused instead."""
    assert resolve_call_id(DispatchMetadata(call_id=CALL), CALL) == CALL
    assert resolve_call_id(DispatchMetadata(), "call-000000000000") == "call-000000000000"
    with pytest.raises(NoCallConfigError, match="metadata names call 'call-aaaaaaaaaaaa'"):
        resolve_call_id(DispatchMetadata(call_id="call-aaaaaaaaaaaa"), "call-bbbbbbbbbbbb")


@pytest.mark.parametrize(
    "written_at",
    [float("nan"), float("inf"), -float("inf"), 10**400],
    ids=["nan", "inf", "-inf", "400 digits"],
)
def test_a_record_whose_written_at_is_no_finite_number_is_not_used(written_at: float) -> None:
    """NaN compares false with everything: such a record passed for any room."""
    record = {**snapshot(), "call_id": CALL, "written_at": written_at}
    selected = select_config(CALL, record, snapshot(), 1000.0)
    assert selected.source == "dispatch-metadata"
    assert "no written_at" in selected.reason


def test_a_record_with_invalid_options_is_not_used() -> None:
    """Invalid options made the record's options the defaults (no voicemail message, no
    analysis) instead of falling back to the snapshot that has them."""
    good = {**snapshot(), "voicemail": {"action": "leave_message", "message": "Call back"}}
    record = {
        **good,
        "call_id": CALL,
        "written_at": 999.0,
        "voicemail": {"action": "leave_message"},
    }
    selected = select_config(CALL, record, good, 1000.0)
    assert selected.source == "dispatch-metadata"
    assert "voicemail" in selected.reason
    assert selected.config.options.voicemail.message == "Call back"


async def test_two_calls_back_to_back_each_get_their_own_config(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    first, second = "call-aaaaaaaaaaaa", "call-bbbbbbbbbbbb"
    await store.update_async("Alice Smith", "Coach cricket.", "en", "Excited", call_id=first)
    await store.update_async("Carlos García", "Vende.", "es", "Calm", call_id=second)
    room_created = time.time() + 0.001  # both rooms are created after both writes

    for call_id, name, language in ((first, "Alice Smith", "en"), (second, "Carlos García", "es")):
        rec = await load_call_record(store, call_id)
        selected = select_config(call_id, rec, None, room_created)
        assert selected.source == "config.json"
        assert selected.config.caller_name == name
        assert selected.config.tts_language == language
        assert selected.config.call_id == call_id

    # The flat "latest" document is the second call's; the first job must not see it.
    assert (await store.load_async())["caller_name"] == "Carlos García"


async def test_load_call_record_never_creates_or_guesses(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    assert await load_call_record(store, CALL) is None
    assert not store.path.exists()  # an agent on another host must not create config.json
    await store.update_async("Alice Smith", call_id="call-aaaaaaaaaaaa")
    assert await load_call_record(store, CALL) is None  # another call's record is not ours


async def test_a_config_read_that_stalls_is_given_up_for_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of config.json that never returns (a stalled disk under it) held the agent's
    job, and the person it called heard silence, for as long as the disk stalled. Now it is
    given up after RECORD_READ_WAIT_S, saying why, and the job uses its dispatch's snapshot."""
    import threading

    from agent import config_source

    monkeypatch.setattr(config_source, "RECORD_READ_WAIT_S", 0.3, raising=False)
    store = ConfigStore(tmp_path / "config.json")
    await store.update_async("Alice Smith", call_id=CALL)
    disk = threading.Event()
    monkeypatch.setattr(store, "_read_sync", lambda *_args: disk.wait(10))
    try:
        started = time.monotonic()
        record, why = await asyncio.wait_for(config_source.read_call_record(store, CALL), 5)
        assert time.monotonic() - started < 4
    finally:
        disk.set()
    assert record is None
    assert why == "config.json record cannot be read: it did not answer in 0.3 s"
