"""A server started from another working directory than its checkout (a systemd unit without
WorkingDirectory, cron, `python /srv/calls/server.py` from a home directory) finds `.env`,
calls.db and config.json from the working directory: the checkout's are not read. Its `.env`
held LIVEKIT_URL: the server started on the embedded sandbox (no phone called), with a new,
empty calls.db (no do-not-call list), and the only word of it was an INFO line listing paths.
Now a WARNING names what of the checkout is not read, and how to have it read."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from agent.cli import start_warnings
from common.settings import Settings
from server import warn_checkout_unread


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    made = tmp_path / "checkout"
    made.mkdir()
    (made / ".env").write_text("LIVEKIT_URL=wss://calls-3f9a.livekit.cloud\n")
    (made / "calls.db").write_bytes(b"SQLite format 3\x00")
    return made


def test_a_server_started_elsewhere_says_what_of_its_checkout_it_does_not_read(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    with caplog.at_level(logging.WARNING):
        warn_checkout_unread(Settings(), checkout)

    assert caplog.messages == [
        f"started from {elsewhere}, not from its checkout {checkout}: the checkout's .env and"
        " calls.db are not read, as .env, calls.db and config.json are found from the working"
        f" directory; start the server from {checkout}, or give its settings in the environment"
        " (CALLS_DB_PATH and CONFIG_PATH as absolute paths)"
    ]


def test_nothing_is_said_from_the_checkout_or_with_files_of_its_own(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(checkout)
    with caplog.at_level(logging.WARNING):
        warn_checkout_unread(Settings(), checkout)
    elsewhere = tmp_path / "deploy"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("PORT=8001\n")  # a directory set up on purpose
    monkeypatch.chdir(elsewhere)
    absolute = dataclasses.replace(Settings(), calls_db_path=elsewhere / "calls.db")
    with caplog.at_level(logging.WARNING):
        warn_checkout_unread(absolute, checkout)

    assert caplog.messages == []


def test_an_agent_worker_started_elsewhere_says_it_first(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr("agent.cli.CHECKOUT", checkout)

    warnings = start_warnings(Settings())

    # above its "missing LIVEKIT_URL, ..." line, whose settings are in that .env
    assert warnings[0].startswith(
        f"started from {elsewhere}, not from its checkout {checkout}: the checkout's .env is"
        " not read, as .env, calls.db and config.json are found from the working directory;"
        f" start the agent worker from {checkout}"
    ), warnings


def test_a_checkout_dotenv_the_environment_gives_is_not_named(
    checkout: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # systemd's EnvironmentFile=/srv/calls/.env with WorkingDirectory=/var/lib/calls: the
    # settings are read, from the environment; calls.db is still new there.
    elsewhere = tmp_path / "state"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("LIVEKIT_URL", "wss://calls-3f9a.livekit.cloud")

    with caplog.at_level(logging.WARNING):
        warn_checkout_unread(Settings(), checkout)

    assert len(caplog.messages) == 1
    assert "the checkout's calls.db is not read" in caplog.messages[0]
