"""The report spool reads, counts and removes only the files it names itself.

Set to a directory that holds other files (`AGENT_REPORT_SPOOL_DIR=.` from the server's
directory, or the server's data directory beside its config.json and calls.db), the worker's
first pass read every `*.json` there as a spooled file, found it unreadable and removed it:
'report spool: config.json cannot be read (KeyError); removed, its reports are lost', and
config.json went, with the records of the calls live then (seen with a config.json the real
ConfigStore wrote, and a package.json beside it). Now only `<time_ns>-<pid>-<digest>.json`
files (and their `.tmp` and `.json.bad` forms) are the spool's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from agent.spool import ReportSpool
from common.config_store.store import ConfigStore
from common.contracts import AgentReport

pytestmark = pytest.mark.usefixtures("no_network")

CALL = "call-0123456789ab"
REPORT = AgentReport(call_id=CALL, seq=0, kind="answered", at=1_800_000_000.0).to_json()


def test_other_files_in_the_spool_directory_are_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.json"
    ConfigStore(config).update("Ann Lee", "Remind Ann of her lesson.", "en", "Calm", call_id=CALL)
    (tmp_path / "package.json").write_text('{"name": "site"}')
    (tmp_path / "notes.json.bad").write_text("{}")
    hour_ago = time.time() - 3600
    other_tmp = tmp_path / ".backup.tmp"
    other_tmp.write_text("{}")
    os.utime(other_tmp, (hour_ago, hour_ago))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    spool = ReportSpool(tmp_path)
    assert spool.save("http://127.0.0.1:1/agent/reports", CALL, [REPORT]) is not None
    assert [s.call_id for s in spool.load()] == [CALL]
    assert [s.call_id for s in spool.load()] == [CALL]

    for name, data in before.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert CALL in json.loads(config.read_text())["calls"]
    assert "cannot be read" not in caplog.text and "removed" not in caplog.text


def test_other_files_do_not_count_toward_the_bound(tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"export-{index}.json").write_text("{}")
    spool = ReportSpool(tmp_path, max_files=1)
    assert spool.save("http://127.0.0.1:1/agent/reports", CALL, [REPORT]) is not None
