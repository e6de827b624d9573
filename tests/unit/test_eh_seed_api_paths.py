"""The seed's Python API as an application uses it with the default, relative CONFIG_PATH
(`config.json`) and a working directory that changes afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import update_config


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The module functions as a script first uses them: no store yet, CONFIG_PATH unset."""
    monkeypatch.delenv("CONFIG_PATH", raising=False)
    previous = update_config._default_store
    update_config._default_store = None
    yield
    update_config._default_store = previous


@pytest.mark.usefixtures("unconfigured")
def test_a_relative_config_path_stays_the_file_it_named_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(project)
    update_config.update_config(caller_name="First")
    monkeypatch.chdir(elsewhere)  # a library's chdir, a daemon's chdir("/")
    update_config.update_config(caller_name="Second")
    # Was written to elsewhere/config.json: an agent reading project/config.json got "First".
    assert json.loads((project / "config.json").read_text())["caller_name"] == "Second"
    assert list(elsewhere.iterdir()) == []
    assert update_config.get_config_value("caller_name") == "Second"
    assert update_config.get_store().path == project / "config.json"
