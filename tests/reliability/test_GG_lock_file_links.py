"""config.json.lock in the service's directory, written in by root (the seed's update_config
run as root there, as README says it may be): that directory's user may put a symbolic link in
the lock file's place. Root followed it: the file it led to was narrowed to the lock file's
mode (`/etc/passwd` 0644 made 0600: no user could log in), one was made where it led to
nowhere (`/etc/nologin`), and a link put there between the lock file's making and the giving
of its owner had root chmod the file it led to with the lock file's mode (0666 when that user
made config.json 0666: `/etc/shadow` open to all)."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore, ConfigWriteError
from tests.processes import NOBODY, forked_as_nobody, reachable_directory

AGENTS = 54321  # a group of the service user's, other than its own

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root writing in a user's directory")


@pytest.fixture
def service_dir() -> Iterator[tuple[Path, Path]]:
    """A directory of `nobody`'s holding its config.json (0600), and a file of root's
    outside it (0644) that a link could lead to."""
    with reachable_directory("gg-lock-links-") as where:
        service = where / "service"
        service.mkdir()
        os.chown(service, NOBODY, NOBODY)
        config = service / "config.json"
        config.write_text("{}")
        os.chown(config, NOBODY, NOBODY)
        config.chmod(0o600)
        victim = where / "passwd"
        victim.write_text("root:x:0:0::/root:/bin/sh\n")
        victim.chmod(0o644)
        yield config, victim


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def plant_link(lock: Path, to: Path) -> None:
    os.symlink(to, lock)
    os.lchown(lock, NOBODY, NOBODY)


def test_a_lock_file_that_is_a_link_is_not_followed_by_root(
    service_dir: tuple[Path, Path],
) -> None:
    config, victim = service_dir
    lock = config.with_name("config.json.lock")
    plant_link(lock, victim)

    with pytest.raises(ConfigWriteError, match="is a symbolic link"):
        ConfigStore(config).update("Root ran a script", call_id="call-1")

    assert mode(victim) == 0o644  # was 0600
    assert lock.is_symlink()


def test_a_lock_file_that_is_a_link_to_nowhere_makes_nothing_there(
    service_dir: tuple[Path, Path],
) -> None:
    config, victim = service_dir
    nologin = victim.with_name("nologin")
    plant_link(config.with_name("config.json.lock"), nologin)

    with pytest.raises(ConfigWriteError, match="is a symbolic link"):
        ConfigStore(config).update("Root ran a script", call_id="call-1")

    assert not nologin.exists()  # was made, root's


def test_a_link_put_in_the_new_lock_file_s_place_gets_nothing_of_root(
    service_dir: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user wins the race: its link replaces the lock file root just made, before root
    gives it config.json's owner and mode."""
    config, victim = service_dir
    # The user's own file, given to its agents' group (README's `chgrp agents config.json`),
    # and opened to all: the lock file's owner and mode follow it.
    os.chown(config, NOBODY, AGENTS)
    config.chmod(0o666)
    lock = config.with_name("config.json.lock")
    real_fchmod: Callable[[int, int], None] = os.fchmod
    swapped: list[bool] = []

    def fchmod_then_swap(fd: int, wanted: int) -> None:
        real_fchmod(fd, wanted)
        held = os.fstat(fd)
        if not swapped and lock.exists() and os.path.samestat(held, os.lstat(lock)):
            swapped.append(True)
            lock.unlink()
            plant_link(lock, victim)

    monkeypatch.setattr(os, "fchmod", fchmod_then_swap)
    try:
        ConfigStore(config).update("Root ran a script", call_id="call-1")
    except ConfigWriteError:
        pass  # the lock file it took was replaced: refused, or its link refused next
    monkeypatch.undo()

    assert swapped
    assert mode(victim) == 0o644  # was 0666
    assert victim.stat().st_uid == 0


def test_a_lock_file_that_is_a_hard_link_is_not_narrowed(service_dir: tuple[Path, Path]) -> None:
    """Where fs.protected_hardlinks is 0, the user may link a file of root's into its
    directory (made here by root, as that user could there)."""
    config, victim = service_dir
    os.link(victim, config.with_name("config.json.lock"))

    ConfigStore(config).update("Root ran a script", call_id="call-1")  # its lock, flock only

    assert mode(victim) == 0o644  # was 0600


def test_a_fifo_in_the_lock_file_s_place_fails_the_write_at_once() -> None:
    """A FIFO of root's (0644) where the service's lock file goes: the service, which may not
    open it to write, opened it to read, and that waited for a writer for good, its write
    and every one after it in the process behind it."""
    with reachable_directory("gg-lock-fifo-") as where:
        where.chmod(0o777)  # noqa: S103 - the service's directory, as if it were nobody's
        config = where / "config.json"
        config.write_text("{}")
        os.chown(config, NOBODY, NOBODY)
        os.mkfifo(config.with_name("config.json.lock"), 0o644)

        def write() -> str:
            signal.alarm(10)  # a write that hangs ends the child: nothing said
            try:
                ConfigStore(config).update("Svc", call_id="call-svc")
            except ConfigWriteError as exc:
                return f"refused: {exc}"
            return "written"

        said = forked_as_nobody(write)

    assert said.startswith("refused:") and "not a regular file" in said, said
