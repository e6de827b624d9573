"""The seed's load_dynamic_config(), read for each new call by a long-lived process (the seed's
agent service) while another process writes each call's config, on a real ext2 file system:
it times files by the clock tick and reuses the inode a replace frees (as ext4 and XFS do on
kernels before 6.13), so two versions of config.json could look alike to fstat. The store
knew a version by its inode, size and times, and gave an earlier call's config again (210 of
500 reads). Root only (a loop mount); skipped where it cannot mount one."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore

READS = 300


@pytest.fixture
def ext2_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory on a fresh ext2 file system (its image in memory where /dev/shm is)."""
    if os.geteuid() != 0 or shutil.which("mke2fs") is None:
        pytest.skip("needs root and mke2fs to mount an ext2 file system")
    shm = Path("/dev/shm")  # noqa: S108 - a RAM image: fsync costs what it does on a fast disk
    image = (shm if shm.is_dir() else tmp_path) / f"ff-ext2-{uuid.uuid4().hex}.img"
    mount_point = tmp_path / "ext2"
    mount_point.mkdir()
    try:
        with image.open("wb") as fh:
            fh.truncate(32 * 1024 * 1024)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", str(image)], check=True)  # noqa: S607
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(image), str(mount_point)],  # noqa: S607
            capture_output=True,
            check=False,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount an ext2 image here: {mounted.stderr.decode().strip()}")
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)  # noqa: S607
    finally:
        image.unlink(missing_ok=True)


def test_each_read_between_writes_gives_the_latest_config(ext2_directory: Path) -> None:
    path = ext2_directory / "config.json"
    writer, reader = ConfigStore(path), ConfigStore(path)  # as two processes: nothing shared
    stale = []
    for i in range(READS):
        writer.update(f"Caller {i:04d}a", tts_language="es")
        reader.load()
        writer.update(f"Caller {i:04d}b", tts_language="fr")
        writer.update(f"Caller {i:04d}c", tts_language="de")
        latest = reader.load()
        if (latest["caller_name"], latest["tts_language"]) != (f"Caller {i:04d}c", "de"):
            stale.append((i, latest["caller_name"]))
    assert stale == [], f"{len(stale)} of {READS} reads gave an earlier call's config"
