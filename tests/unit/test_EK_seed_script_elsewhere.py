"""The seed's functions in a script run from another directory than the checkout (cron, a
scheduler, the user's own project) read and write the working directory's config.json: the
seed says "project_root/config.json", and the server and agent started in the checkout never
saw what the script wrote (its calls' agents took no config from it), without a word. Now
the first use says so once, as a WARNING (a script without logging set up shows it too)."""

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
    return made


def test_a_script_elsewhere_is_told_it_does_not_use_the_checkouts_config_json(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CONFIG_PATH", raising=False)
    monkeypatch.setattr(update_config, "CHECKOUT", checkout)
    monkeypatch.setattr(update_config, "_default_store", None)

    with caplog.at_level(logging.WARNING):
        update_config.update_config(caller_name="From cron")
        update_config.load_dynamic_config()

    assert caplog.messages == [
        f"started from {elsewhere}, not from its checkout {checkout}: the checkout's"
        " config.json is not read, as .env, calls.db and config.json are found from the"
        f" working directory; start the script from {checkout}, or give its settings in the"
        " environment (CALLS_DB_PATH and CONFIG_PATH as absolute paths)"
    ]
    assert (elsewhere / "config.json").exists()  # still written where it was


def test_nothing_is_said_with_an_absolute_config_path(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFIG_PATH", str(checkout / "config.json"))
    monkeypatch.setattr(update_config, "CHECKOUT", checkout)
    monkeypatch.setattr(update_config, "_default_store", None)

    with caplog.at_level(logging.WARNING):
        assert update_config.load_dynamic_config()["caller_name"] == "From the server"

    assert caplog.messages == []
