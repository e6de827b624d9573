"""The server's start-up check of config.json says what a plain "Permission denied" is about,
as a call's write does: config.json's directory (a write makes files beside it), or
config.json itself (another user's, unreadable). It said "Permission denied (set
CONFIG_PATH)", the first line an operator moving the server to a service user saw."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from common.config_store.store import ConfigStore
from common.settings import Settings
from handlers.keys import CONFIG, SETTINGS
from server import StartupError, _config_writable
from tests.processes import NOBODY, forked_as_nobody, reachable_directory

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")


@pytest.fixture
def directory() -> Iterator[Path]:
    with reachable_directory("ek-config-access-") as made:
        yield made


def _start_up_check_as_nobody(path: Path) -> str:
    """What the server's start-up check of config.json at `path` says, run as `nobody`."""
    app = web.Application()
    app[SETTINGS] = dataclasses.replace(Settings(), config_path=path)
    app[CONFIG] = ConfigStore(path)

    async def check() -> str:
        try:
            await anext(aiter(_config_writable(app)))
        except StartupError as exc:
            return str(exc)
        return "writable"

    return forked_as_nobody(lambda: asyncio.run(check()))


def test_a_directory_it_may_not_write_is_said(directory: Path) -> None:
    path = directory / "config.json"  # no config.json yet; the directory is root's

    said = _start_up_check_as_nobody(path)

    assert said == (
        f"config.json ({path}) cannot be written: Permission denied (this user may not create"
        " files in config.json's directory: a write needs write access to the directory, not"
        " only to config.json) (set CONFIG_PATH)"
    )


def test_a_config_json_it_may_not_read_is_said(directory: Path) -> None:
    os.chown(directory, NOBODY, NOBODY)
    path = directory / "config.json"
    path.write_text("{}")
    path.chmod(0o600)  # root's, as a file made by hand as root

    said = _start_up_check_as_nobody(path)

    assert said.endswith(
        ": Permission denied (config.json is not readable by this user) (set CONFIG_PATH)"
    ), said
