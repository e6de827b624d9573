"""An agent worker upgraded in place on the report spool an earlier release wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.spool import ReportSpool
from common.contracts import AgentReport

pytestmark = pytest.mark.usefixtures("no_network")

REPORT = AgentReport(call_id="call-1", seq=0, kind="answered", at=1.0).to_json()


def test_a_file_an_earlier_release_set_aside_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The release of 2026-12-05 (4b617bc to cba83e5) renamed a spooled file it could not read
    `<name>.json.bad` and kept it: a call's transcript on the agent's host for good, never
    sent, never counted, past CALL_DATA_RETENTION_DAYS. The upgraded worker left it there."""
    spool = ReportSpool(tmp_path)
    aside = tmp_path / "01796500018935327400-4242-abc.json.bad"
    aside.write_text('{"url": "x", "call_id": "c", "reports": [{"text": "my card is 4111"}]}')
    assert spool.save("http://127.0.0.1:1/agent/reports", "call-1", [REPORT])
    assert [s.call_id for s in spool.load()] == ["call-1"]  # the spool's own file is kept
    assert not aside.exists()
    assert f"{aside.name} removed: an earlier release set it aside as unreadable" in caplog.text
    assert "4111" not in caplog.text
    assert [p.suffix for p in tmp_path.iterdir()] == [".json"]
