"""config.json.lock was made 0644 whatever config.json's mode: any local user could open it
(flock needs no write access) and hold it, `flock -s config.json.lock sleep 1d`, and every
call's write waited LOCK_WAIT_S and failed: every call 503, config.json itself 0600 and
closed to them. The lock file is now open to the users who may write config.json, and no
one else; one of ours made wider by an earlier release is narrowed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore, lock_file_mode
from tests.processes import NOBODY, ROOT, as_nobody


@pytest.mark.parametrize(
    ("config_mode", "lock_mode"),
    [
        (0o600, 0o600),
        (0o640, 0o600),  # an agent's group may read config.json: not hold its writers up
        (0o644, 0o600),
        (0o660, 0o660),  # a group that writes it takes the lock too
        (0o664, 0o660),
        (0o666, 0o666),
        (0o400, 0o600),  # read-only for all: its owner's (root's writes)
    ],
)
def test_the_lock_is_open_to_config_json_s_writers_only(config_mode: int, lock_mode: int) -> None:
    assert oct(lock_file_mode(config_mode)) == oct(lock_mode)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture
def where() -> Iterator[Path]:
    """A directory `nobody` may enter (pytest's base directory is closed to others)."""
    with tempfile.TemporaryDirectory(prefix="lock-access-") as name:
        os.chmod(name, 0o755)  # noqa: S103 - read by nobody, as /srv/app would be
        yield Path(name)


def test_a_new_lock_file_is_config_json_s_writers_only_whatever_the_umask(where: Path) -> None:
    store = ConfigStore(where / "config.json")
    saved = os.umask(0)
    try:
        store.update("Alice", call_id="call-1")
    finally:
        os.umask(saved)
    assert (mode(where / "config.json"), mode(store.lock_path)) == ("0o600", "0o600")


def test_a_group_writable_config_json_keeps_its_group_s_lock(where: Path) -> None:
    config = where / "config.json"
    ConfigStore(config).update("Alice")
    config.chmod(0o660)
    store = ConfigStore(config)
    store.lock_path.unlink()  # an operator's clean-up of a "stale" lock file
    asyncio.run(store.update_async("Bob", call_id="call-2"))
    assert mode(store.lock_path) == "0o660"


def test_a_lock_file_an_earlier_release_made_0644_is_narrowed(where: Path) -> None:
    config = where / "config.json"
    store = ConfigStore(config)
    store.update("Alice")
    store.lock_path.chmod(0o644)  # as releases before 2026-12-06 made it
    ConfigStore(config).update("Bob")  # a restarted server's first write
    assert mode(store.lock_path) == "0o600"


def held_by_nobody(lock: Path) -> subprocess.CompletedProcess[str]:
    """`nobody` tries to take the lock as a writer would wait on it (util-linux flock)."""
    return subprocess.run(  # noqa: S603 - fixed arguments
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "flock",
            "--nonblock",
            "--shared",
            str(lock),
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or shutil.which("flock") is None,
    reason="needs root, setpriv and flock",
)
def test_another_user_cannot_hold_the_writers_lock(where: Path) -> None:
    store = ConfigStore(where / "config.json")
    store.update("Alice", call_id="call-1")
    store.lock_path.chmod(0o644)
    assert held_by_nobody(store.lock_path).returncode == 0  # the way in, before
    ConfigStore(where / "config.json").update("Bob")
    refused = held_by_nobody(store.lock_path)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused


def nobody_writes(config: Path) -> subprocess.CompletedProcess[str]:
    """The service's write as `nobody`, its WARNING lines on stderr (skips if `nobody`
    cannot reach the checkout: one under a 0700 directory)."""
    written = as_nobody(
        f"import asyncio, logging, sys; sys.path.insert(0, {str(ROOT)!r});"
        "from common.config_store.store import ConfigStore;"
        "logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(message)s');"
        "asyncio.run(ConfigStore(sys.argv[1]).update_async('Svc', call_id='call-svc'))",
        str(config),
    )
    # nor its Python: a libpython found by $ORIGIN (pyenv's 3.13), which the loader ignores
    # for a process setpriv made
    if any(s in written.stderr for s in ("ModuleNotFoundError", "error while loading shared")):
        pytest.skip(f"nobody cannot run the project from {ROOT}: {written.stderr[-200:]}")
    return written


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_lock_file_closed_to_config_json_s_owner_is_replaced(where: Path) -> None:
    """Root made config.json and its lock (root's, 0600), then an operator gave config.json
    alone to the service: the service may write config.json, not open its lock."""
    where.chmod(0o777)  # noqa: S103 - the service's directory, as if it were nobody's
    config = where / "config.json"
    ConfigStore(config).update("Root ran a script")
    os.chown(config, NOBODY, NOBODY)
    assert stat.S_IMODE(os.stat(config.with_name("config.json.lock")).st_mode) == 0o600
    written = nobody_writes(config)
    assert written.returncode == 0, written.stderr
    assert "closed to this user" in written.stderr and "replaced" in written.stderr
    assert os.stat(config.with_name("config.json.lock")).st_uid == NOBODY
    assert '"call-svc"' in config.read_text()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_a_user_who_may_read_config_json_but_not_write_it_is_told_so(where: Path) -> None:
    where.chmod(0o777)  # noqa: S103 - a directory that takes their files: config.json decides
    config = where / "config.json"
    ConfigStore(config).update("Root ran a script")
    config.chmod(0o644)
    written = nobody_writes(config)
    assert written.returncode != 0
    assert "Permission denied (config.json is not writable by this user)" in written.stderr
    assert json.loads(config.read_text())["caller_name"] == "Root ran a script"
