"""A 0644 `.env` (or calls.db, config.json) in a directory no other user may pass through
(a checkout under /root, 0700; a home directory of mode 0750) is no other user's to read: it
was warned of at every start as "may be read by every user of this machine: chmod o-rwx it"
(seen running as root from /root, where `cat` as nobody is refused)."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from common.settings import Settings, dotenv_warnings
from server import warn_open_files
from tests.processes import reachable_directory

SECRET = "s3cretS3cretS3cretS3cretS3cretS3cret"


@pytest.mark.parametrize("mode", [0o700, 0o750], ids=["0700", "0750"])
def test_a_dotenv_in_a_directory_others_cannot_pass_is_not_warned_of(mode: int) -> None:
    with reachable_directory() as top:
        checkout = top / "home" / "checkout"
        checkout.mkdir(parents=True)
        path = checkout / ".env"
        path.write_text(f"LIVEKIT_API_SECRET={SECRET}\n")
        path.chmod(0o644)
        assert dotenv_warnings(path) != []  # every directory open: every user may read it

        (top / "home").chmod(mode)

        assert dotenv_warnings(path) == []


def test_a_calls_db_in_a_directory_others_cannot_pass_is_not_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with reachable_directory() as top:
        settings = dataclasses.replace(
            Settings(), config_path=top / "config.json", calls_db_path=top / "calls.db"
        )
        (top / "calls.db").write_text("")
        (top / "calls.db").chmod(0o644)
        with caplog.at_level(logging.WARNING, logger="server"):
            warn_open_files(settings)
        assert "calls.db (mode 0644) may be read by every user" in caplog.text
        caplog.clear()

        top.chmod(0o700)
        with caplog.at_level(logging.WARNING, logger="server"):
            warn_open_files(settings)

        assert caplog.text == ""
