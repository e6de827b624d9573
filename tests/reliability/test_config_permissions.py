"""config.json written by a service user that is not root, next to files other users made:
a lock file root created (root ran the seed's update_config once in the service's directory)
failed every write with EACCES while /readyz said ready; config.json owned by another user in
a sticky directory (/tmp's mode 1777) cannot be replaced, and /readyz said ready too.

Run as root only (the test drops to `nobody` with setpriv for the service's side).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.update_config import ConfigStore

NOBODY = 65534
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)

# What the service does, as `nobody`: the readiness probe, then a call's write.
SERVICE = """
import asyncio, json, sys
from common.update_config import ConfigStore

async def main() -> None:
    store = ConfigStore(sys.argv[1])
    outcome = {}
    try:
        await store.probe_writable_async()
        outcome["probe"] = "ok"
    except OSError as exc:
        outcome["probe"] = str(exc)
    try:
        await store.update_async("Service", call_id="call-1")
        outcome["write"] = "ok"
    except OSError as exc:
        outcome["write"] = str(exc)
    print(json.dumps(outcome))

asyncio.run(main())
"""


def as_nobody(config: Path) -> dict[str, str]:
    result = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            # to read the project and its venv wherever they are checked out
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            sys.executable,
            "-c",
            SERVICE,
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        check=True,
    )
    outcome: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return outcome


def test_a_lock_file_root_made_does_not_stop_the_services_writes(tmp_path: Path) -> None:
    directory = tmp_path / "svc"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    tmp_path.chmod(0o755)
    ConfigStore(directory / "config.json").update("Root ran a script")
    lock = (directory / "config.json.lock").stat()  # the directory owner's, as config.json
    assert (lock.st_uid, oct(lock.st_mode & 0o777)) == (NOBODY, "0o600")
    assert as_nobody(directory / "config.json") == {"probe": "ok", "write": "ok"}
    written = json.loads((directory / "config.json").read_text())
    assert written["calls"]["call-1"]["caller_name"] == "Service"


def test_another_users_config_in_a_sticky_directory_is_not_ready(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o1777)
    tmp_path.chmod(0o755)
    config = directory / "config.json"
    config.write_text('{"calls": {}}')
    config.chmod(0o666)  # writable, but only its owner may replace it there
    outcome = as_nobody(config)
    assert "cannot replace it" in outcome["probe"]
    assert outcome["write"] != "ok"  # what the probe foretold
    assert json.loads(config.read_text()) == {"calls": {}}
