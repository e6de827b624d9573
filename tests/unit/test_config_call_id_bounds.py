"""A record is written only for a call id an agent can use and a log line can show: one line
of at most MAX_CALL_ID_CHARS. A record an earlier release wrote under another id still reads
and drops."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.config_store.model import MAX_CALL_ID_CHARS
from common.config_store.store import CALLS_KEY, ConfigStore

REFUSED = [
    ("x" * (MAX_CALL_ID_CHARS + 1), f"call_id must be at most {MAX_CALL_ID_CHARS} characters"),
    ("x" * 100_000, f"call_id must be at most {MAX_CALL_ID_CHARS} characters"),
    ("call-1\nERROR forged line", "call_id must not contain control characters"),
    ("call-1\r", "call_id must not contain control characters"),
    ("call\x00", "call_id must not contain control characters"),
    ("call-1\u2028ERROR", "call_id must not contain line separators"),
    ("call-\u202e1", "bidi override"),
]


@pytest.mark.parametrize(("call_id", "message"), REFUSED)
async def test_a_call_id_no_agent_or_log_could_take_is_refused(
    store: ConfigStore, config_path: Path, call_id: str, message: str
) -> None:
    store.update("Alice", call_id="call-kept")
    before = config_path.read_bytes()
    with pytest.raises(ValueError, match=message):
        store.update("Mallory", call_id=call_id)
    with pytest.raises(ValueError, match=message):
        await store.update_async("Mallory", call_id=call_id)
    assert config_path.read_bytes() == before  # nothing written, the latest config unchanged


def test_the_longest_id_is_taken(store: ConfigStore) -> None:
    call_id = "c" * MAX_CALL_ID_CHARS
    store.update("Alice", call_id=call_id)
    assert store.load(call_id=call_id)["caller_name"] == "Alice"


def test_an_update_logs_one_line(store: ConfigStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(ValueError):
        store.update("Alice", call_id="abc\nERROR common: forged")
    assert not any("forged" in r.getMessage() for r in caplog.records)


def test_a_record_an_earlier_release_wrote_still_reads_and_drops(
    store: ConfigStore, config_path: Path
) -> None:
    store.update("Alice", call_id="call-1")
    doc = json.loads(config_path.read_bytes())
    odd = "legacy\t" + "y" * 150
    doc[CALLS_KEY][odd] = dict(doc[CALLS_KEY]["call-1"], caller_name="Old", call_id=odd)
    config_path.write_text(json.dumps(doc))
    assert store.load(call_id=odd)["caller_name"] == "Old"
    assert store.remove_call(odd) is True
    assert odd not in json.loads(config_path.read_bytes())[CALLS_KEY]
