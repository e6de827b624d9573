"""The seed's module functions and CONFIG_PATH set in the environment after their first use:
a notebook's `%env CONFIG_PATH=...`, a test suite's `monkeypatch.setenv` per test, an
application that sets os.environ after a module of it already wrote. Every later call went on
writing and reading the config.json named at the first use, with no line saying so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import update_config


@pytest.fixture
def unconfigured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The module functions as a script first uses them: no store yet, no .env, CONFIG_PATH
    and CONFIG_RECORD_TTL_S unset."""
    for name in ("CONFIG_PATH", "CONFIG_RECORD_TTL_S", "CALLS_DB_PATH", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(update_config, "_default_store", None)
    monkeypatch.setattr(update_config, "_made_from_env", None, raising=False)
    yield


@pytest.mark.usefixtures("unconfigured")
def test_config_path_set_after_the_first_use_is_the_file_written_and_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first" / "config.json", tmp_path / "second" / "config.json"
    monkeypatch.setenv("CONFIG_PATH", str(first))
    update_config.update_config(caller_name="Alice", additional_params={"campaign_id": "A"})

    monkeypatch.setenv("CONFIG_PATH", str(second))
    update_config.update_config(caller_name="Bob", additional_params={"campaign_id": "B"})

    # Was written to first/config.json (Alice replaced by Bob there), second never made.
    assert json.loads(second.read_text())["caller_name"] == "Bob"
    assert json.loads(first.read_text())["caller_name"] == "Alice"
    assert update_config.get_config_value("campaign_id", default="DEFAULT") == "B"
    assert update_config.get_store().path == second


@pytest.mark.usefixtures("unconfigured")
async def test_the_async_functions_follow_it_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    monkeypatch.setenv("CONFIG_PATH", str(first))
    await update_config.update_config_async(caller_name="Alice")
    monkeypatch.setenv("CONFIG_PATH", str(second))
    assert (await update_config.load_dynamic_config_async())["caller_name"] == "Guest"
    await update_config.update_config_async(caller_name="Bob")
    assert await update_config.get_config_value_async("caller_name") == "Bob"
    assert json.loads(first.read_text())["caller_name"] == "Alice"


@pytest.mark.usefixtures("unconfigured")
def test_an_unchanged_environment_keeps_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = update_config.get_store()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the relative default names the first file
    monkeypatch.setenv("UNRELATED", "1")
    assert update_config.get_store() is store
    assert store.path == tmp_path / "config.json"


@pytest.mark.usefixtures("unconfigured")
def test_a_configured_store_is_kept_whatever_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update_config.get_store()  # a first use from the settings, then the server's own
    configured = update_config.configure_store(tmp_path / "server.json")
    monkeypatch.setenv("CONFIG_PATH", str(tmp_path / "other.json"))
    assert update_config.get_store() is configured
