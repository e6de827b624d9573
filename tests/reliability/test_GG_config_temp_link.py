"""Root's write of config.json in the service's directory (the seed's update_config run as root
there): the temp file it writes and then gives config.json's owner and mode can be replaced,
in between, by a link of that directory's user (who sees it come, inotify). By path, root's
chmod followed the link: the file it led to got config.json's mode (0666 when that user made
its config.json so: `/etc/shadow` open to all), and the link became config.json."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from common.config_store import store as config_store_module
from common.config_store.store import ConfigStore, ConfigWriteError
from tests.processes import NOBODY, reachable_directory

AGENTS = 54321  # the agents' group config.json is given to (README's `chgrp agents`)


@pytest.mark.skipif(os.geteuid() != 0, reason="root writing in a user's directory")
def test_a_link_swapped_in_for_root_s_temp_file_gets_nothing_of_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with reachable_directory("gg-temp-link-") as where:
        service = where / "service"
        service.mkdir()
        os.chown(service, NOBODY, NOBODY)
        config = service / "config.json"
        config.write_text("{}")
        os.chown(config, NOBODY, AGENTS)
        config.chmod(0o666)  # the user's own file: root's write keeps its mode
        victim = where / "shadow"
        victim.write_text("root:$6$secret:::::::\n")
        victim.chmod(0o640)
        real = config_store_module._write_durably
        swapped: list[Path] = []

        def written_then_swapped(path: Path, data: bytes, mode: int = 0o600) -> None:
            real(path, data, mode)
            if path.name.startswith(".config.json.tmp-") and not swapped:
                swapped.append(path)
                path.unlink()
                os.symlink(victim, path)
                os.lchown(path, NOBODY, NOBODY)

        monkeypatch.setattr(config_store_module, "_write_durably", written_then_swapped)
        with pytest.raises(ConfigWriteError, match="replaced"):
            ConfigStore(config).update("Root ran a script", call_id="call-1")

        assert swapped
        assert stat.S_IMODE(victim.stat().st_mode) == 0o640  # was 0666
        assert not config.is_symlink()  # was the link, to the victim
        assert not swapped[0].exists() and not swapped[0].is_symlink()  # removed


@pytest.mark.skipif(os.geteuid() != 0, reason="root writing in a user's directory")
def test_a_hard_link_swapped_in_for_root_s_temp_file_gets_nothing_of_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where fs.protected_hardlinks is 0 the user may link a file of root's in its place."""
    with reachable_directory("gg-temp-hardlink-") as where:
        service = where / "service"
        service.mkdir()
        os.chown(service, NOBODY, NOBODY)
        config = service / "config.json"
        config.write_text("{}")
        os.chown(config, NOBODY, AGENTS)
        config.chmod(0o666)
        victim = where / "shadow"
        victim.write_text("root:$6$secret:::::::\n")
        victim.chmod(0o640)
        real = config_store_module._write_durably

        def written_then_linked(path: Path, data: bytes, mode: int = 0o600) -> None:
            real(path, data, mode)
            if path.name.startswith(".config.json.tmp-"):
                path.unlink()
                os.link(victim, path)

        monkeypatch.setattr(config_store_module, "_write_durably", written_then_linked)
        with pytest.raises(ConfigWriteError, match="replaced"):
            ConfigStore(config).update("Root ran a script", call_id="call-1")

        assert stat.S_IMODE(victim.stat().st_mode) == 0o640  # was 0666
        assert victim.stat().st_uid == 0  # was nobody's
