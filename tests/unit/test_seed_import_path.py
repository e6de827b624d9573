"""The seed's unit-test example, unchanged, under the seed's import path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common import update_config as common_module


@pytest.fixture(autouse=True)
def config_here(tmp_path: Path) -> Iterator[None]:
    previous = common_module._default_store
    common_module.configure_store(tmp_path / "config.json")
    yield
    common_module._default_store = previous


def test_update_and_load_config() -> None:
    # From SEED-dynamic-configuration-system.md, "Unit Tests", as written there:
    from voice_backend.outboundService.common.update_config import (
        load_dynamic_config,
        update_config,
    )

    config = update_config(
        caller_name="Test User",
        agent_instructions="Test instructions",
        tts_language="en",
        tts_emotion="Calm",
    )
    assert config["caller_name"] == "Test User"
    loaded = load_dynamic_config()
    assert loaded["caller_name"] == "Test User"


def test_the_seed_path_is_the_same_module() -> None:
    from voice_backend.outboundService.common import update_config as seed_module

    assert seed_module is common_module
