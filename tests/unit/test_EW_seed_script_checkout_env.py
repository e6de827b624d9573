"""A script of the seed's functions run from another directory, given the server's
CONFIG_PATH as an absolute path as the README says, was still told at every run that "the
checkout's .env is not read ... give its settings in the environment (... CONFIG_PATH as
absolute paths)": the checkout's .env held the server's LIVEKIT_URL and trunk, which the
script never reads. Its .env is named only when it sets what these functions read."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common import update_config


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    made = tmp_path / "checkout"
    made.mkdir()
    (made / "config.json").write_text('{"caller_name": "From the server"}')  # `make run`'s
    (made / ".env").write_text(
        "LIVEKIT_URL=wss://calls-7f3a.livekit.cloud\nSIP_OUTBOUND_TRUNK_ID=ST_4kQx9\n"
        "CALLS_DB_PATH=/var/lib/calls/calls.db\n"
    )
    return made


@pytest.fixture
def elsewhere(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Path:
    cron = tmp_path / "cron"
    cron.mkdir()
    monkeypatch.chdir(cron)
    for name in ("CONFIG_PATH", "LIVEKIT_URL", "SIP_OUTBOUND_TRUNK_ID", "CALLS_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(update_config, "CHECKOUT", checkout)
    monkeypatch.setattr(update_config, "_default_store", None)
    caplog.set_level(logging.WARNING, logger="common.update_config")
    return cron


def test_an_absolute_config_path_is_enough_though_the_checkout_has_a_dotenv(
    checkout: Path,
    elsewhere: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CONFIG_PATH", str(checkout / "config.json"))

    assert update_config.load_dynamic_config()["caller_name"] == "From the server"

    assert caplog.messages == []


def test_a_dotenv_setting_config_path_is_named(
    checkout: Path, elsewhere: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (checkout / ".env").write_text(f"CONFIG_PATH={checkout / 'config.json'}\n")

    update_config.load_dynamic_config()

    assert len(caplog.messages) == 1
    assert "the checkout's .env and config.json are not read" in caplog.messages[0]


def test_the_checkouts_config_json_alone_is_named_when_its_dotenv_sets_nothing_read(
    elsewhere: Path, caplog: pytest.LogCaptureFixture
) -> None:
    update_config.load_dynamic_config()

    assert len(caplog.messages) == 1
    assert "the checkout's config.json is not read" in caplog.messages[0]
