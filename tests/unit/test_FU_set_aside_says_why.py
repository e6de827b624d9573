"""A config.json set aside at a write says why it could not be used.

A seed's config.json that the user's own application extended with a `calls` list (its call
log: valid JSON, the seed's fields all there) is no document this store can add a record to,
and the first write (a server's start-up probe, a call) kept it aside with only
"✗ config.json was unreadable; kept aside as config.json.corrupt-…": the user opened that copy,
found valid JSON, and had no way to tell what was wrong with it (its `calls` is the store's
reserved key). The line now names the problem, as a read's line does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore

CASES = {
    "a calls list": (
        b'{"caller_name": "John Doe", "calls": [{"to": "+15550100"}]}',
        "has a 'calls' that is not an object",
    ),
    "a comment": (b'{\n  // the seed\'s\n  "caller_name": "John Doe"\n}\n', "is not valid JSON"),
    "a list": (b'[{"caller_name": "John Doe"}]', "is not a JSON object"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_line_says_why_the_file_was_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    data, why = CASES[case]
    path = tmp_path / "config.json"
    path.write_bytes(data)
    store = ConfigStore(path)

    with caplog.at_level(logging.ERROR, logger="common.config_store.store"):
        store.update(caller_name="Alice Smith")

    said = [r.getMessage() for r in caplog.records if "kept aside as" in r.getMessage()]
    assert len(said) == 1, caplog.messages
    assert why in said[0], said[0]
    (kept,) = tmp_path.glob("config.json.corrupt-*")
    assert kept.read_bytes() == data  # what it held, whole
    assert store.load()["caller_name"] == "Alice Smith"
