"""Disk faults in config.json's durable write path: the old file stays, no temp file is left,
the write raises a clear ConfigWriteError, and `POST /calls/outbound` answers 503 JSON without
placing the call.

Faults are injected at each step of the write (create the temp file, write it, fsync it,
replace config.json, fsync the directory) for the sync and async APIs and through the app, and
also come from the kernel itself on a full tmpfs where this machine lets us mount one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import subprocess
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiofiles
import aiofiles.base
import aiofiles.os
import pytest
from aiohttp.test_utils import TestClient

from common import update_config
from common.update_config import (
    ConfigStore,
    ConfigWriteError,
    configure_store,
    update_config_async,
)
from server import SANDBOX
from tests.conftest import AppFactory
from tests.reliability.conftest import Figures

Client = TestClient[Any, Any]
TEMP_MARK = ".config.json.tmp-"
CALL = {"phone_number": "+14155550123", "name": "Disk Fault", "language": "en", "emotion": "Calm"}


def _oserror(code: int, filename: str | None = None) -> OSError:
    kind = PermissionError if code == errno.EACCES else OSError
    if filename is None:
        return kind(code, os.strerror(code))
    return kind(code, os.strerror(code), filename)


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class _ShortFile:
    """A temp file whose write stores half the bytes, then fails (the disk filled up)."""

    def __init__(self, fh: Any, code: int) -> None:
        self._fh = fh
        self._code = code

    def __enter__(self) -> _ShortFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise _oserror(self._code)

    def flush(self) -> None:
        self._fh.flush()

    def fileno(self) -> int:
        return int(self._fh.fileno())


class _AsyncShortFile:
    def __init__(self, opener: Any, code: int | None, fail_open: bool) -> None:
        self._opener = opener
        self._code = code
        self._fail_open = fail_open
        self._fh: Any = None

    async def __aenter__(self) -> _AsyncShortFile | Any:
        if self._fail_open and self._code is not None:
            raise _oserror(self._code)
        self._fh = await self._opener.__aenter__()
        return self if self._code is not None else self._fh

    async def __aexit__(self, *exc: Any) -> None:
        await self._opener.__aexit__(*exc)

    async def write(self, data: bytes) -> int:
        assert self._code is not None
        await self._fh.write(data[: len(data) // 2])
        await self._fh.flush()
        raise _oserror(self._code)

    async def flush(self) -> None:
        await self._fh.flush()

    def fileno(self) -> int:
        return int(self._fh.fileno())


@dataclass
class DiskFault:
    """One fault at one step of config.json's write path, on while `active`."""

    step: str  # create | write | fsync | replace | dirsync
    code: int
    active: bool = True
    hits: int = 0

    def hit(self) -> bool:
        if self.active:
            self.hits += 1
        return self.active

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Patch the calls a durable write makes, filtered to config.json's temp files.

        The os-level calls are patched process-wide (the store may run them on any thread);
        file objects and aiofiles, which the store may use instead, are shadowed in the
        store's module only.
        """
        real_open, real_os_open, real_write = open, os.open, os.write
        real_fsync, real_replace = os.fsync, os.replace
        real_aio_open: Any = aiofiles.open
        short_written: set[int] = set()

        def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            temp = TEMP_MARK in os.fspath(path) and bool(flags & os.O_CREAT)
            if temp and self.step == "create" and self.hit():
                raise _oserror(self.code, os.fspath(path))
            fd = real_os_open(path, flags, *args, **kwargs)
            short_written.discard(fd)
            return fd

        def os_write(fd: int, data: Any) -> int:
            if self.step == "write" and TEMP_MARK in _fd_path(fd):
                if fd not in short_written and len(data) > 1:  # a short write, then a full disk
                    short_written.add(fd)
                    return real_write(fd, bytes(data)[: len(data) // 2])
                if self.hit():
                    raise _oserror(self.code)
            return real_write(fd, data)

        def sync_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            temp = TEMP_MARK in os.fspath(file) and "w" in mode
            if temp and self.step == "create" and self.hit():
                raise _oserror(self.code, os.fspath(file))
            fh = real_open(file, mode, *args, **kwargs)
            if temp and self.step == "write" and self.hit():
                return _ShortFile(fh, self.code)
            return fh

        def async_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            temp = TEMP_MARK in os.fspath(file) and "w" in mode
            if temp and self.step == "create" and self.hit():
                return _AsyncShortFile(None, self.code, fail_open=True)
            opener = real_aio_open(file, mode, *args, **kwargs)
            if temp and self.step == "write" and self.hit():
                return _AsyncShortFile(opener, self.code, fail_open=False)
            return opener

        def fsync(fd: int) -> None:
            target = _fd_path(fd)
            is_temp = TEMP_MARK in target
            is_dir = os.path.isdir(target)
            if (self.step == "fsync" and is_temp) or (self.step == "dirsync" and is_dir):
                if self.hit():
                    raise _oserror(self.code)
            real_fsync(fd)

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if TEMP_MARK in os.fspath(src) and self.step == "replace" and self.hit():
                raise _oserror(self.code, os.fspath(src))
            real_replace(src, dst, *args, **kwargs)

        async def async_replace(src: Any, dst: Any) -> None:
            replace(src, dst)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "write", os_write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(update_config, "open", sync_open, raising=False)
        if hasattr(update_config, "aiofiles"):
            monkeypatch.setattr(
                update_config,
                "aiofiles",
                types.SimpleNamespace(
                    base=aiofiles.base,
                    open=async_open,
                    os=types.SimpleNamespace(
                        replace=async_replace, remove=aiofiles.os.remove, path=aiofiles.os.path
                    ),
                ),
            )


FAULTS = {
    "EACCES creating the temp file": ("create", errno.EACCES),
    "ENOSPC half-way through the write": ("write", errno.ENOSPC),
    "EIO on fsync": ("fsync", errno.EIO),
    "EIO replacing config.json": ("replace", errno.EIO),
}


@pytest.fixture(params=list(FAULTS), ids=list(FAULTS))
def disk_fault(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DiskFault]:
    step, code = FAULTS[request.param]
    fault = DiskFault(step, code)
    fault.install(monkeypatch)
    yield fault


def _temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if TEMP_MARK in p.name]


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[Path, bytes]]:
    """The module API on a config.json that already holds one call; its bytes."""
    previous = update_config._default_store
    path = tmp_path / "config.json"
    store = configure_store(path)
    store.update("Before", "Old instructions", "fr", "Serious", {"k": 1}, call_id="call-before")
    yield path, path.read_bytes()
    update_config._default_store = previous


def _assert_clear(exc: ConfigWriteError, code: int) -> None:
    assert exc.errno == code
    assert os.strerror(code) in str(exc) and "could not write config" in str(exc)


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_store_write_fault_keeps_old_file(
    seeded: tuple[Path, bytes], disk_fault: DiskFault, api: str, figures: Figures
) -> None:
    path, before = seeded
    with pytest.raises(ConfigWriteError) as raised:
        if api == "sync":
            update_config.update_config("New", "New instructions", call_id="call-new")
        else:
            await update_config_async("New", "New instructions", call_id="call-new")
    _assert_clear(raised.value, disk_fault.code)
    assert disk_fault.hits == 1
    assert path.read_bytes() == before  # the old config.json, byte for byte
    assert _temp_files(path.parent) == []
    assert update_config.load_dynamic_config()["caller_name"] == "Before"

    disk_fault.active = False  # the disk recovers: the next write succeeds
    update_config.update_config("After", call_id="call-after")
    calls = update_config.load_dynamic_config(call_id="call-after")
    assert calls["caller_name"] == "After"
    figures.add(f"{api} {disk_fault.step} {errno.errorcode[disk_fault.code]}: held")


@pytest.mark.parametrize("api", ["sync", "async"])
async def test_failure_after_replace_leaves_no_temp(
    seeded: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """EIO on the directory fsync, after os.replace: if the store reports it, it reports it
    clearly; either way no temp file is left."""
    path, _ = seeded
    fault = DiskFault("dirsync", errno.EIO)
    fault.install(monkeypatch)
    try:
        if api == "sync":
            update_config.update_config("New", call_id="call-new")
        else:
            await update_config_async("New", call_id="call-new")
    except ConfigWriteError as exc:
        _assert_clear(exc, errno.EIO)
    assert fault.hits >= 1
    assert _temp_files(path.parent) == []


def test_directory_fsync_failure_leaves_previous_file(
    seeded: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, before = seeded
    DiskFault("dirsync", errno.EIO).install(monkeypatch)
    try:
        update_config.update_config("New", call_id="call-new")
    except ConfigWriteError:
        assert path.read_bytes() == before  # what ConfigWriteError says
    else:
        assert update_config.load_dynamic_config()["caller_name"] == "New"  # or it succeeded


async def _place(client: Client, **changes: str) -> Any:
    return await client.post("/calls/outbound", json=dict(CALL, **changes))


def _dials(client: Client) -> int:
    return sum(r.method == "CreateSIPParticipant" for r in client.app[SANDBOX].requests)


async def _rows(client: Client) -> list[str]:
    calls = (await (await client.get("/calls?limit=500")).json())["calls"]
    return [c["call_id"] for c in calls]


async def _refused_without_side_effects(
    client: Client,
    path: Path,
    before: bytes,
    keep_file: bool = True,
    caplog: pytest.LogCaptureFixture | None = None,
) -> dict[str, Any]:
    rows, dials = await _rows(client), _dials(client)
    resp = await _place(client, name="Refused")
    assert resp.status == 503
    answer: dict[str, Any] = await resp.json()
    if caplog is not None:  # the refused call is named in the log (the store's line is not)
        assert any(
            r.getMessage().startswith("call call-")
            and "refused: its configuration could not be stored" in r.getMessage()
            for r in caplog.records
        ), [r.getMessage() for r in caplog.records]
    assert answer["status"] == "error"
    assert answer["error"].startswith("could not store the call's configuration")
    if keep_file:
        assert path.read_bytes() == before
    assert _temp_files(path.parent) == []
    assert _dials(client) == dials  # no call placed
    assert await _rows(client) == rows  # no row for it
    return answer


async def test_outbound_call_503_on_disk_fault(
    start_app: AppFactory,
    tmp_path: Path,
    disk_fault: DiskFault,
    figures: Figures,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk_fault.active = False  # the server starts only on a config.json that takes a write
    client = await start_app(sandbox_time_scale=100.0)
    assert (await _place(client)).status == 200
    disk_fault.active = True
    path = tmp_path / "config.json"
    answer = await _refused_without_side_effects(client, path, path.read_bytes(), caplog=caplog)
    assert os.strerror(disk_fault.code) in answer["error"]
    disk_fault.active = False
    resp = await _place(client, name="After")
    assert resp.status == 200  # the server keeps serving once the disk recovers
    assert (await client.get("/readyz")).status == 200
    figures.add(f"503 '{answer['error']}'; nothing placed, old file kept; recovers")


async def test_a_disk_that_refuses_every_write_is_said_once_not_per_call(
    start_app: AppFactory,
    disk_fault: DiskFault,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A full disk (or a held lock) refuses every call: 20 calls gave 20 ERROR lines of each
    kind in a second. Now one of each, then once a minute with how many were held back."""
    disk_fault.active = False
    client = await start_app(sandbox_time_scale=100.0)
    disk_fault.active = True
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        answers = await asyncio.gather(*(_place(client, name=f"R{n}") for n in range(20)))
    assert [a.status for a in answers] == [503] * 20
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("refused: its configuration could not be stored" in m for m in errors) == 1
    assert sum("Configuration update failed" in m for m in errors) == 1, errors


async def test_directory_fsync_failure_answer_matches_the_file(
    start_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new file is already visible when the directory fsync fails. Whatever the store
    reports, the client's answer and config.json agree: a refused call (503) leaves no record
    for an agent to find and is not dialled; a placed call (200) has its record."""
    client = await start_app(sandbox_time_scale=100.0)
    assert (await _place(client)).status == 200
    path = tmp_path / "config.json"
    rows, dials = await _rows(client), _dials(client)
    fault = DiskFault("dirsync", errno.EIO)
    fault.install(monkeypatch)
    resp = await _place(client, name="Dirsync")
    fault.active = False
    assert fault.hits >= 1 and _temp_files(path.parent) == []
    names = [r["caller_name"] for r in json.loads(path.read_text())["calls"].values()]
    if resp.status == 503:
        assert names == ["Disk Fault"]  # not the refused call's record
        assert _dials(client) == dials and await _rows(client) == rows
    else:
        assert resp.status == 200
        assert sorted(names) == ["Dirsync", "Disk Fault"]
        assert _dials(client) == dials + 1
    assert (await _place(client, name="After")).status == 200


# ------------------------------------------------------------------ a real full disk


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({type(exc).__name__})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, timeout=10)


def _fill(directory: Path) -> Path:
    """Fill the file system holding `directory` until the kernel says ENOSPC."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for _ in range(100_000):  # bounded: far more than the tmpfs holds
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """A small tmpfs; calling the fixture's value fills it up and returns the filler file."""
    with _tmpfs(tmp_path / "mnt", "512k") as mount:
        yield lambda: _fill(mount)


async def test_real_full_tmpfs(
    start_app: AppFactory,
    tmp_path: Path,
    full_disk: Callable[[], Path],
    figures: Figures,
) -> None:
    path = tmp_path / "mnt" / "config.json"
    client = await start_app(config_path=path, sandbox_time_scale=100.0)
    assert (await _place(client)).status == 200
    before = path.read_bytes()
    filler = full_disk()

    answer = await _refused_without_side_effects(client, path, before)
    assert os.strerror(errno.ENOSPC) in answer["error"]
    store = ConfigStore(path)
    with pytest.raises(ConfigWriteError) as raised:
        store.update("Sync", call_id="call-sync")
    _assert_clear(raised.value, errno.ENOSPC)
    with pytest.raises(ConfigWriteError) as raised:
        await store.update_async("Async", call_id="call-async")
    _assert_clear(raised.value, errno.ENOSPC)
    assert path.read_bytes() == before and _temp_files(path.parent) == []

    filler.unlink()  # space again: the same server places calls again
    assert (await _place(client, name="After")).status == 200
    figures.add(f"kernel ENOSPC on a full tmpfs: 503 '{answer['error']}', sync and async raise")
