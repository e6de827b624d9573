"""The config store's fast paths give exactly what the slow ones would (see bench/RESULTS.md).

A writer reuses its last document instead of re-parsing config.json, encodes only the records
it changed, skips the TTL scan while no record can be stale, and a reader of one call parses
only that call's line. None of that may ever change what is read or written.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from common.config_store.store import CALLS_KEY, ConfigStore, UnknownCallError, _record_from_line


def on_disk(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_bytes())
    return doc


def test_the_kept_document_is_what_the_file_holds(config_path: Path) -> None:
    store = ConfigStore(config_path)
    for i in range(30):
        store.update(f"Caller {i}", additional_params={"n": i, "t": (1, 2)}, call_id=f"call-{i}")
        if i % 3 == 0:
            store.remove_call(f"call-{i - 1}")
        written = store._written
        assert written is not None
        assert written.doc == on_disk(config_path)
        assert written.data == config_path.read_bytes()


def test_caller_objects_changed_later_never_reach_the_file(config_path: Path) -> None:
    store = ConfigStore(config_path)
    params: dict[str, Any] = {"tags": ["a"], "meta": {"k": "v"}}
    result = store.update("Alice", additional_params=params, call_id="call-a")
    params["tags"].append("changed")
    params["meta"]["k"] = "changed"
    result["additional_params"]["meta"] = "changed too"
    store.update("Bob", call_id="call-b")  # rewrites the file from the kept document
    record = on_disk(config_path)[CALLS_KEY]["call-a"]
    assert record["tags"] == ["a"] and record["meta"] == {"k": "v"}
    assert record["additional_params"] == {"tags": ["a"], "meta": {"k": "v"}}


def test_another_writer_in_between_is_never_overwritten(config_path: Path) -> None:
    ours, theirs = ConfigStore(config_path), ConfigStore(config_path)
    ours.update("Ours 1", call_id="call-ours-1")
    theirs.update("Theirs", call_id="call-theirs")  # same size, same second: still seen
    ours.update("Ours 2", call_id="call-ours-2")
    assert set(on_disk(config_path)[CALLS_KEY]) == {"call-ours-1", "call-theirs", "call-ours-2"}


def test_a_hand_edit_with_the_same_size_is_seen(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.update("Alice", call_id="call-a")
    text = config_path.read_text().replace('"Alice"', '"Alicf"')
    config_path.write_text(text)
    store.update("Bob", call_id="call-b")
    assert on_disk(config_path)[CALLS_KEY]["call-a"]["caller_name"] == "Alicf"


def test_ttl_pruning_still_happens_with_the_kept_document(config_path: Path) -> None:
    now = [1000.0]
    store = ConfigStore(config_path, record_ttl_s=60, clock=lambda: now[0])
    store.update("Old", call_id="call-old")
    now[0] += 30
    store.update("Mid", call_id="call-mid")
    now[0] += 31  # call-old is now 61 s old, call-mid 31 s
    store.update("New", call_id="call-new")
    assert set(on_disk(config_path)[CALLS_KEY]) == {"call-mid", "call-new"}
    now[0] -= 500  # the clock stepping back: a record "from the future" must not hide others
    store.update("Back", call_id="call-back")
    now[0] += 500 + 61
    store.update("Later", call_id="call-later")
    assert set(on_disk(config_path)[CALLS_KEY]) == {"call-later"}


def test_file_is_one_line_per_record_and_reads_as_before(config_path: Path) -> None:
    store = ConfigStore(config_path)
    store.update("Zoë", "x\n\u2028" * 50, "fr", "Calm", {"a": {"b": [1, 2.5]}}, call_id="call-1")
    store.update("Bob", call_id="call-2")
    lines = config_path.read_text().split("\n")
    assert lines[0] == "{" and lines[-2:] == ["}", ""]
    record_lines = [ln for ln in lines if ln.startswith("    ")]
    assert len(record_lines) == 2
    assert store.load()["caller_name"] == "Bob"
    assert store.load(call_id="call-1")["agent_instructions"] == "x\n\u2028" * 50


def test_reading_one_record_from_its_line_equals_parsing_the_file(config_path: Path) -> None:
    store = ConfigStore(config_path)

    async def fill() -> None:
        await asyncio.gather(
            *(
                store.update_async(f'N "{i}"', additional_params={"i": i}, call_id=f"call-{i}")
                for i in range(50)
            )
        )

    asyncio.run(fill())
    data = config_path.read_bytes()
    calls = json.loads(data)[CALLS_KEY]
    for call_id, record in calls.items():
        assert _record_from_line(data, call_id) == record
        assert ConfigStore(config_path).load(call_id=call_id) == record
    assert _record_from_line(data, "call-missing") is None
    try:
        ConfigStore(config_path).load(call_id="call-missing")
    except UnknownCallError:
        pass
    else:
        raise AssertionError("a missing call must raise UnknownCallError")


def test_files_not_written_by_this_store_are_parsed_whole(config_path: Path) -> None:
    record = {"caller_name": "Old", "call_id": "call-a", "written_at": 1.0}
    old_style = json.dumps({"caller_name": "Old", CALLS_KEY: {"call-a": record}}, indent=2)
    config_path.write_text(old_style)
    assert _record_from_line(old_style.encode(), "call-a") is None
    assert ConfigStore(config_path).load(call_id="call-a")["caller_name"] == "Old"
    # A line claiming to be call-a's record but naming another call is not trusted.
    forged = '{\n  "calls": {\n    "call-a": {"call_id": "call-b"}\n  }\n}\n'
    assert _record_from_line(forged.encode(), "call-a") is None
    # A torn file (no closing line) is never read line by line.
    torn = '{\n  "calls": {\n    "call-a": {"call_id": "call-a"}'
    assert _record_from_line(torn.encode(), "call-a") is None
