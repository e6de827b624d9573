"""The seed's Python API as an application uses it with the default, relative CONFIG_PATH
(`config.json`) and a working directory that changes afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import update_config
from common.settings import SettingsError


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


@pytest.mark.usefixtures("unconfigured")
def test_the_applications_own_settings_in_dotenv_do_not_stop_the_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed's layout: one .env for the application, its database URL and port among it.
    for name in ("DATABASE_URL", "PORT", "LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "DATABASE_URL=mysql://app:secret@db/app\nPORT=web\nLOG_LEVEL=verbose\n"
        "CONFIG_PATH=app-config.json\n"
    )
    monkeypatch.chdir(tmp_path)
    # Was SettingsError: "DATABASE_URL must start with postgresql:// (or postgres://)".
    config = update_config.update_config(caller_name="John Doe", tts_emotion="Excited")
    assert config["caller_name"] == "John Doe"
    assert update_config.get_config_value("tts_emotion", default="Calm") == "Excited"
    assert json.loads((tmp_path / "app-config.json").read_text())["caller_name"] == "John Doe"


@pytest.mark.usefixtures("unconfigured")
def test_a_config_path_naming_the_calls_database_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    (tmp_path / ".env").write_text("CONFIG_PATH=calls.db\nPORT=web\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="name the same file"):
        update_config.update_config(caller_name="John Doe")
    assert list(tmp_path.iterdir()) == [tmp_path / ".env"]


def test_a_failed_write_logs_which_config_file_it_was(
    default_store: update_config.ConfigStore,
    config_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config_path.mkdir()  # config.json a directory: the error itself names no file
    with pytest.raises(update_config.ConfigWriteError):
        update_config.update_config(caller_name="John Doe")
    failed = [r.getMessage() for r in caplog.records if "update failed" in r.getMessage()]
    # Was "✗ Configuration update failed (write): [Errno 21] not a regular file (...)".
    assert len(failed) == 1 and str(config_path) in failed[0], failed


def test_a_relative_config_path_through_a_linked_directory_leads_where_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # project/data links to a volume's directory: `data/../config.json` is the volume's file.
    (tmp_path / "volume" / "data").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "data").symlink_to(tmp_path / "volume" / "data")
    monkeypatch.chdir(tmp_path / "project")
    store = update_config.ConfigStore("data/../config.json")
    store.update("John Doe")
    # Not project/config.json, as a path normalised before the kernel followed the link.
    assert json.loads((tmp_path / "volume" / "config.json").read_text())["caller_name"] == (
        "John Doe"
    )
    assert not (tmp_path / "project" / "config.json").exists()
