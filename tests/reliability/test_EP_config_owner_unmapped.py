"""config.json owned by a user root's user namespace does not map (a rootless container: the
service as root inside it, config.json on a volume another host user wrote, shown as 65534):
root's write gave the fresh file that owner back (2b92ed9), chown refused it with EINVAL,
not EPERM, and every write failed `could not write config (write): Invalid argument`, every
call 503. Before 2b92ed9 the write was made, the file root's. It is made again, the owner
not kept, with the warning that says so.

Run as root only, with `unshare -Ur` (a user namespace mapping root alone)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare"
)

OTHER_USER = 4242  # not mapped in the namespace: seen there as the overflow id

WRITES = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from common.config_store.store import ConfigStore
ConfigStore(sys.argv[1]).update("Alice", call_id="call-ep0000000001")
"""


def test_a_config_json_of_an_unmapped_owner_is_still_written(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"caller_name": "Bob"}))
    config.chmod(0o644)  # readable by the namespace's root, which has no DAC override on it
    os.chown(config, OTHER_USER, OTHER_USER)
    probe = subprocess.run(  # noqa: S603 - fixed arguments
        ["unshare", "-Ur", "true"], capture_output=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr[-200:]!r}")
    done = subprocess.run(  # noqa: S603 - fixed arguments
        ["unshare", "-Ur", sys.executable, "-c", WRITES, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-800:]
    assert json.loads(config.read_text())["caller_name"] == "Alice"
    assert "an id its user namespace does not map" in done.stderr
