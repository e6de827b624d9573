"""/readyz names a failing component's directory by that component's own file.

Found running `make run` under `ulimit -n 90` with every descriptor taken: config.json and
calls.db share the checkout's directory, and /readyz said `config: calls.db's directory: Too
many open files`, the last of the two files it knew naming the directory both are in.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from handlers.health import without_paths
from handlers.keys import CONFIG
from tests.conftest import AppFactory


def test_a_shared_directory_is_named_by_the_first_file_given() -> None:
    files = [Path("/app/config.json"), Path("/app/calls.db")]
    shown = without_paths("/app: Too many open files", files)
    assert shown == "config.json's directory: Too many open files"
    shown = without_paths("/app: Too many open files", files[::-1])
    assert shown == "calls.db's directory: Too many open files"


async def test_config_s_failure_names_config_json_s_directory(
    start_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await start_app()  # config.json and calls.db both in tmp_path
    assert (await client.get("/readyz")).status == 200

    async def out_of_descriptors() -> None:
        lock = tmp_path / "config.json.lock"
        raise OSError(errno.EMFILE, "Too many open files", str(lock))

    monkeypatch.setattr(client.app[CONFIG], "probe_writable_async", out_of_descriptors)
    answer = await client.get("/readyz")
    assert answer.status == 503
    details = (await answer.json())["details"]
    assert {"component": "config", "error": "config.json's directory: Too many open files"} in (
        details
    ), details
