"""config.json.lock made by root under a strict umask (077, or a hardened 027): root's write
was the first since the lock file was removed (an operator's clean-up of a "stale" lock
file, c3fa7c8), so root made it anew, root's and 0600, and every later write of the service
(another user) failed `could not write config (lock): Permission denied`: every call refused
503. config.json itself stayed the service's (2b92ed9); its lock file did not.

Run as root only (the service's side drops to `nobody` with setpriv, without capabilities)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore
from tests.processes import NOBODY, ROOT, as_nobody

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)

# The service's write of a call record, as `nobody`.
SERVICE_WRITES = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT)!r})
from common.config_store.store import ConfigStore
asyncio.run(ConfigStore(sys.argv[1]).update_async("Svc", call_id=sys.argv[2]))
"""


def service_writes(config: Path, call_id: str) -> subprocess.CompletedProcess[str]:
    return as_nobody(SERVICE_WRITES, str(config), call_id)


@pytest.mark.parametrize("umask", [0o077, 0o027])
def test_root_remaking_the_lock_file_leaves_it_usable_by_the_service(umask: int) -> None:
    # Not under tmp_path: pytest's base directory is root's alone (0700), closed to nobody.
    with tempfile.TemporaryDirectory(prefix="ee-lock-owner-") as where:
        os.chmod(where, 0o777)  # noqa: S103 - the service's directory, writable by nobody
        config = Path(where) / "config.json"
        first = service_writes(config, "call-svc-1")
        if first.returncode != 0:
            pytest.skip(f"nobody cannot run the project from {ROOT}: {first.stderr[-200:]}")
        store = ConfigStore(config)
        store.lock_path.unlink()  # the clean-up of a "stale" lock file
        saved = os.umask(umask)
        try:
            asyncio.run(store.update_async("Root", call_id="call-root"))  # update_config as root
        finally:
            os.umask(saved)
        assert config.stat().st_uid == NOBODY  # config.json stays the service's (2b92ed9)
        after = service_writes(config, "call-svc-2")
        assert after.returncode == 0, after.stderr[-500:]
        assert '"call-svc-2"' in config.read_text()
        lock = store.lock_path.stat()  # config.json's writers' alone (test_lock_file_access)
        assert (oct(lock.st_mode & 0o777), lock.st_uid) == ("0o600", NOBODY)
