"""The seed's Python API used as application code uses it, across `os.fork()` (a pre-forking
server, multiprocessing's fork start method) while another thread of the parent writes."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from common import update_config


def _exit_code_of(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_child_forked_during_another_threads_write_can_write(
    default_store: update_config.ConfigStore, config_path: Path
) -> None:
    update_config.update_config(caller_name="Before")
    # Another process holds config.json.lock: the parent's writer thread waits for it inside
    # its write, holding the store's thread lock, when the parent forks.
    lock_fd = os.open(default_store.lock_path, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=update_config.update_config, args=("Parent",))
    writer.start()
    while not default_store._thread_lock.locked():
        time.sleep(0.001)
    pid = os.fork()
    if pid == 0:  # the child: its copy of the other process's lock goes, then it writes
        code = 1
        try:
            os.close(lock_fd)
            update_config.update_config(caller_name="Child")
            code = 0
        finally:
            os._exit(code)
    os.close(lock_fd)  # the other process lets go: parent and child write, one then the other
    writer.join()
    assert _exit_code_of(pid) == 0  # was ConfigWriteError: "held by a write of this process"
    # Both writes went through, one after the other: the file is whole and holds the last.
    assert update_config.ConfigStore(config_path).load()["caller_name"] in ("Parent", "Child")


def test_a_child_forked_while_the_default_store_is_made_can_use_it() -> None:
    previous = update_config._default_store
    held, release = threading.Event(), threading.Event()

    def hold_default_lock() -> None:
        with update_config._default_lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_default_lock)
    holder.start()
    held.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: get_store() waited for good on the lock copied as held
            code = 1
            try:
                signal.alarm(10)
                update_config.get_store()
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join()
        update_config._default_store = previous
    assert _exit_code_of(pid) == 0


NOBODY = 65534


def _write_as_nobody(path: Path) -> str:
    """What an update of `path` by another user (a forked child) says."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child, as another user, writes; its error's text to the pipe
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                update_config.ConfigStore(path).update("After")
                said = "written"
            except update_config.ConfigWriteError as exc:
                said = str(exc)
            os.write(writer, said.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as answer:
        said = answer.read().decode()
    assert _exit_code_of(pid) == 0
    return said


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_config_json_not_readable_says_so() -> None:
    directory = Path(tempfile.mkdtemp(prefix="eh-config-"))
    try:
        directory.chmod(0o777)  # the directory takes its files: config.json is the problem
        path = directory / "config.json"
        update_config.ConfigStore(path).update("Before")  # root's, 0600
        said = _write_as_nobody(path)
        assert "Permission denied (config.json is not readable by this user)" in said, said
        assert json.loads(path.read_text())["caller_name"] == "Before"
    finally:
        shutil.rmtree(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_directory_not_writable_says_what_a_write_needs() -> None:
    # config.json writable by its user, its directory not: `chmod 644 config.json` (the
    # seed's advice) gives no write, as every write makes files beside it.
    directory = Path(tempfile.mkdtemp(prefix="eh-config-"))
    try:
        directory.chmod(0o755)
        path = directory / "config.json"
        update_config.ConfigStore(path).update("Before")
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o644)
        said = _write_as_nobody(path)
        # Was "could not write config (write): Permission denied", nothing on what to change.
        # (The lock file is the first file a write makes: root's, closed to the others.)
        assert "could not write config (lock): Permission denied (" in said, said
        assert "may not create files in config.json's directory" in said, said
        assert str(directory) not in said  # (an API client's 503 shows this text)
        assert json.loads(path.read_text())["caller_name"] == "Before"
    finally:
        shutil.rmtree(directory)
