"""Shared fixtures: real files in a temp directory, the module store pointed at them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common import update_config
from common.update_config import ConfigStore


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


@pytest.fixture
def store(config_path: Path) -> ConfigStore:
    return ConfigStore(config_path)


@pytest.fixture
def default_store(config_path: Path) -> Iterator[ConfigStore]:
    """The seed's module-level functions, writing to a temp config.json."""
    previous = update_config._default_store
    configured = update_config.configure_store(config_path)
    yield configured
    update_config._default_store = previous
