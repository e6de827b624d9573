"""A server started once as root, with no call placed, leaves config.json.lock (root's, 0600)
and no config.json. The operator then gave the directory (and calls.db) to the service's
user: the service refused to start, `config.json (config.json) cannot be written: Permission
denied (config.json is not readable by this user)`, about a config.json that was not there
and that it was free to create. A user who may create config.json may take its lock: the
lock file is replaced, as it is for a user who may write a config.json that is there. And
where the directory takes no file of theirs, the refusal says so, not that a missing
config.json is unreadable."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore
from tests.processes import NOBODY, ROOT, as_nobody, reachable_directory

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


@pytest.fixture
def where() -> Iterator[Path]:
    with reachable_directory("GH-lock-") as made:
        yield made


def roots_lock_only(where: Path) -> Path:
    """config.json's lock as root's start-up leaves it, and no config.json."""
    config = where / "config.json"
    asyncio.run(ConfigStore(config).probe_writable_async(rewrite=True))  # start-up's check
    assert not config.exists()
    lock = config.with_name("config.json.lock")
    assert (lock.stat().st_uid, lock.stat().st_mode & 0o777) == (0, 0o600)
    return config


def nobody_writes(config: Path) -> subprocess.CompletedProcess[str]:
    written = as_nobody(
        f"import logging, sys; sys.path.insert(0, {str(ROOT)!r});"
        "from common.config_store.store import ConfigStore;"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s');"
        "import asyncio; store = ConfigStore(sys.argv[1])\n"
        "try:\n"
        "    asyncio.run(store.probe_writable_async(rewrite=True))\n"  # as server.py starts
        "except OSError as exc:\n"
        "    sys.exit((exc.strerror or str(exc)) + store.advice(exc))\n"
        "store.update('Svc', call_id='call-svc')",
        str(config),
    )
    if "ModuleNotFoundError" in written.stderr:
        pytest.skip(f"nobody cannot run the project from {ROOT}")
    return written


def test_the_service_given_the_directory_replaces_root_s_lock(where: Path) -> None:
    config = roots_lock_only(where)
    os.chown(where, NOBODY, NOBODY)  # `chown nobody /srv/calls`
    written = nobody_writes(config)
    assert written.returncode == 0, written.stderr
    assert "closed to this user" in written.stderr and "replaced" in written.stderr
    assert config.with_name("config.json.lock").stat().st_uid == NOBODY
    assert '"call-svc"' in config.read_text()


def test_a_directory_that_takes_no_file_is_named_not_a_missing_config_json(where: Path) -> None:
    config = roots_lock_only(where)  # the directory stays root's 0755
    written = nobody_writes(config)
    assert written.returncode != 0
    assert "not readable" not in written.stderr, written.stderr
    assert "may not create files in config.json's directory" in written.stderr, written.stderr
