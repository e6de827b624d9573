"""The seed's update_config run as root in the service's directory (README says it may be),
where that directory's user made config.json a symbolic link to a file of root's: root wrote
through it, and the file was replaced by config.json's JSON (`/etc/passwd`: no one could log
in), its text kept aside as `passwd.corrupt-<time>` and a `passwd.lock` made beside it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore, ConfigWriteError
from tests.processes import NOBODY, reachable_directory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root writing in a user's directory")

PASSWD = "root:x:0:0::/root:/bin/sh\n"


@pytest.fixture
def where() -> Iterator[tuple[Path, Path]]:
    """The service user's directory, and a directory of root's holding a file of root's."""
    with reachable_directory("gg-config-link-") as base:
        service, etc = base / "service", base / "etc"
        service.mkdir()
        os.chown(service, NOBODY, NOBODY)
        etc.mkdir()
        (etc / "passwd").write_text(PASSWD)
        yield service, etc


def link(config: Path, to: Path) -> None:
    os.symlink(to, config)
    os.lchown(config, NOBODY, NOBODY)


def test_root_does_not_write_through_another_user_s_link_to_root_s_file(
    where: tuple[Path, Path],
) -> None:
    service, etc = where
    config = service / "config.json"
    link(config, etc / "passwd")

    with pytest.raises(ConfigWriteError, match="root does not write through it"):
        ConfigStore(config).update("Root ran a script", call_id="call-1")

    assert (etc / "passwd").read_text() == PASSWD
    assert sorted(p.name for p in etc.iterdir()) == ["passwd"]  # no .lock, no .corrupt-


def test_nor_through_one_to_a_new_file_in_root_s_directory(where: tuple[Path, Path]) -> None:
    service, etc = where
    config = service / "config.json"
    link(config, etc / "cron-job")

    with pytest.raises(ConfigWriteError, match="root does not write through it"):
        ConfigStore(config).update("Root ran a script", call_id="call-1")

    assert sorted(p.name for p in etc.iterdir()) == ["passwd"]


def test_a_link_of_the_service_s_to_its_own_file_is_written_through(
    where: tuple[Path, Path],
) -> None:
    service, _ = where
    volume = service / "volume"
    volume.mkdir()
    os.chown(volume, NOBODY, NOBODY)
    (volume / "config.json").write_text("{}")
    os.chown(volume / "config.json", NOBODY, NOBODY)
    config = service / "config.json"
    link(config, volume / "config.json")

    ConfigStore(config).update("Root ran a script", call_id="call-1")

    assert config.is_symlink()
    written = volume / "config.json"
    assert json.loads(written.read_text())["caller_name"] == "Root ran a script"
    assert written.stat().st_uid == NOBODY  # still the service's
