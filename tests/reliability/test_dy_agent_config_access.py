"""An agent job of another user and config.json: what it says when it cannot reach the file
(the server's directory closed to it, a home directory of mode 0700 or 0750, was taken for "no
config.json record", as if the file were missing: an agent on another host, a record pruned),
and the group through which it reads the file (`chgrp agents config.json; chmod 640`), which
the server's next write kept only the mode of.

Run as root only (the job's side drops to `nobody` with setpriv, without capabilities: it
must not read past permissions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config_source import NO_RECORD
from common.update_config import ConfigStore
from tests.processes import NOBODY, ROOT, as_nobody

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)

# An agent job's read of its call's record, as `nobody`: (record found, why not).
JOB = f"""
import asyncio, json, sys
sys.path.insert(0, {str(ROOT)!r})
from agent.config_source import read_call_record
from common.config_store.store import ConfigStore

record, why = asyncio.run(read_call_record(ConfigStore(sys.argv[1]), sys.argv[2]))
print(json.dumps({{"found": record is not None, "why": why}}))
"""


def job_reads(config: Path, call_id: str) -> dict[str, object]:
    result = as_nobody(JOB, str(config), call_id)
    assert result.returncode == 0, result.stderr
    read: dict[str, object] = json.loads(result.stdout)
    return read


@pytest.fixture
def nobody_runs_the_project() -> None:
    probe = as_nobody(f"import sys; sys.path.insert(0, {str(ROOT)!r}); import agent.config_source")
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run the project from {ROOT}: {probe.stderr.strip()[-200:]}")


@pytest.mark.usefixtures("nobody_runs_the_project")
def test_a_config_json_behind_a_closed_directory_is_said_unreadable() -> None:
    # Not under tmp_path: pytest's base directory is root's alone (0700), closed to nobody.
    with tempfile.TemporaryDirectory(prefix="dy-agent-access-") as where:
        os.chmod(where, 0o755)  # noqa: S103 - for nobody to reach the config
        home = Path(where) / "server-home"
        home.mkdir(mode=0o755)
        home.chmod(0o755)
        a_job_of_another_user_reads(home)


def a_job_of_another_user_reads(home: Path) -> None:
    config = home / "config.json"
    asyncio.run(ConfigStore(config).update_async("Alice", call_id="call-a"))
    config.chmod(0o644)  # the file itself readable by all, as the README's chmod allows

    assert job_reads(config, "call-a") == {"found": True, "why": ""}
    assert job_reads(home / "missing.json", "call-a") == {"found": False, "why": NO_RECORD}

    home.chmod(0o700)  # the server's home directory, closed to other users
    try:
        assert job_reads(config, "call-a") == {
            "found": False,
            "why": "config.json record cannot be read: Permission denied",
        }
    finally:
        home.chmod(0o755)


@pytest.mark.usefixtures("nobody_runs_the_project")
def test_config_json_keeps_its_group_through_the_servers_writes() -> None:
    """The operator gave config.json to the agents' group (here nobody's, 65534) with mode
    640: each write creates the file anew, and it was the server's group again (root's), so
    the agent lost its records from the next call on (its jobs said `Permission denied` and
    used their snapshots)."""
    with tempfile.TemporaryDirectory(prefix="dy-agent-group-") as where:
        os.chmod(where, 0o755)  # noqa: S103 - for nobody to reach the config
        config = Path(where) / "config.json"
        store = ConfigStore(config)
        asyncio.run(store.update_async("Alice", call_id="call-a"))
        os.chown(config, -1, NOBODY)
        config.chmod(0o640)
        assert job_reads(config, "call-a") == {"found": True, "why": ""}

        asyncio.run(store.update_async("Bob", call_id="call-b"))  # the next call's write
        status = config.stat()
        assert (status.st_gid, status.st_mode & 0o777) == (NOBODY, 0o640)
        assert job_reads(config, "call-b") == {"found": True, "why": ""}


# A server's write as `nobody`, with its log's WARNING lines.
WRITER = f"""
import asyncio, logging, sys
sys.path.insert(0, {str(ROOT)!r})
from common.config_store.store import ConfigStore

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
asyncio.run(ConfigStore(sys.argv[1]).update_async("Bob", call_id="call-b"))
"""


@pytest.mark.usefixtures("nobody_runs_the_project")
def test_a_group_the_server_is_not_in_is_said_lost_and_the_write_goes_through() -> None:
    with tempfile.TemporaryDirectory(prefix="dy-agent-group-") as where:
        os.chmod(where, 0o777)  # noqa: S103 - nobody writes config.json here
        config = Path(where) / "config.json"
        asyncio.run(ConfigStore(config).update_async("Alice", call_id="call-a"))
        os.chown(config, NOBODY, 0)  # nobody's file, in root's group (nobody is not in it)
        config.chmod(0o640)

        written = as_nobody(WRITER, str(config))
        assert written.returncode == 0, written.stderr
        status = config.stat()
        assert (status.st_gid, status.st_mode & 0o777) == (NOBODY, 0o640)
        said = f"{config} belonged to uid {NOBODY} and group 0, which this process may not give"
        assert said in written.stderr
        assert set(json.loads(config.read_text())["calls"]) == {"call-a", "call-b"}


@contextlib.contextmanager
def service_directory(prefix: str) -> Iterator[tuple[Path, Path]]:
    """A directory of root's (0755: nobody reaches through it), with the service's in it."""
    with tempfile.TemporaryDirectory(prefix=prefix) as where:
        os.chmod(where, 0o755)  # noqa: S103 - for nobody to reach the config
        directory = Path(where) / "svc"
        directory.mkdir()
        os.chown(directory, NOBODY, NOBODY)
        yield Path(where), directory


@pytest.mark.usefixtures("nobody_runs_the_project")
def test_root_running_the_seeds_update_config_once_leaves_the_file_the_services() -> None:
    """The service runs as its own user (here nobody) and writes its config.json (0600, its
    own); root ran the seed's `update_config` once in the service's directory: that write
    made config.json root's, 0600, and every write of the service after it failed with
    `Permission denied` (every call 503), its agents reading nothing either."""
    with service_directory("dy-root-once-") as (_, directory):
        config = directory / "config.json"

        first = as_nobody(WRITER, str(config))
        assert first.returncode == 0, first.stderr
        assert (config.stat().st_uid, config.stat().st_mode & 0o777) == (NOBODY, 0o600)

        ConfigStore(config).update("Root ran a script")  # as root, once
        status = config.stat()
        assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (NOBODY, NOBODY, 0o600)

        again = as_nobody(WRITER, str(config))
        assert again.returncode == 0, again.stderr
        assert json.loads(config.read_text())["calls"]["call-b"]["caller_name"] == "Bob"


@pytest.mark.usefixtures("nobody_runs_the_project")
def test_root_making_the_services_config_json_first_makes_it_the_services() -> None:
    """Root ran the seed's `update_config` in the service's directory before the service ever
    wrote: config.json was root's, 0600, and the service could neither read nor write it. It
    is the directory owner's now; in root's own directory it stays root's."""
    with service_directory("root-first-") as (where, directory):
        config = directory / "config.json"

        ConfigStore(config).update("Root ran a script first")  # as root
        status = config.stat()
        assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (NOBODY, NOBODY, 0o600)
        written = as_nobody(WRITER, str(config))
        assert written.returncode == 0, written.stderr

        own = where / "config.json"  # root's own directory
        ConfigStore(own).update("Root's own")
        assert (own.stat().st_uid, own.stat().st_mode & 0o777) == (0, 0o600)
