"""config.json's or calls.db's directory that every user of the machine may write is a
start-up WARNING: any of them may put a file of their own there under the name, and the server
writes callers' data into it, keeping its owner and mode.

Seen with the real server run as root, CONFIG_PATH in a 1777 directory (as /tmp is) where
`nobody` had made config.json (0600) first: every call's name, number and instructions went
into nobody's file, with no line saying so; and in a 0777 directory (as the server made them
under umask 000 before 1310a13) `nobody` renamed config.json away and put a 0666 file of
their own in its place, which the next call's write kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from common.settings import Settings
from server import warn_open_directories
from tests.processes import NOBODY, reachable_directory


def _warned(caplog: pytest.LogCaptureFixture, directory: Path) -> list[str]:
    settings = dataclasses.replace(
        Settings(),
        config_path=directory / "config.json",
        calls_db_path=directory / "calls.db",
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server"):
        warn_open_directories(settings)
    return [r.getMessage() for r in caplog.records]


def test_a_directory_every_user_may_write_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with reachable_directory() as top:
        (top / "config.json").write_text("{}")
        top.chmod(0o777)
        warned = _warned(caplog, top)
        assert len(warned) == 2, warned  # config.json's and calls.db's (one directory here)
        assert warned[0] == (
            f"{top} (mode 0777) may be written by every user of this machine: any of them may"
            " put a file of their own there as config.json, which this server then writes"
            " names, instructions and extra parameters into, keeping its owner and mode; chmod"
            " o-w it, or move config.json to a directory of the service's own"
        )
        assert "as calls.db, which this server then writes names, numbers" in warned[1]

        top.chmod(0o755)
        assert _warned(caplog, top) == []


def test_a_sticky_directory_is_warned_of_until_the_file_there_is_this_servers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with reachable_directory() as top:
        top.chmod(0o1777)
        (top / "calls.db").write_text("")
        warned = _warned(caplog, top)  # config.json not made yet: anyone may take the name
        assert len(warned) == 1, warned
        assert warned[0].startswith(f"{top} (mode 1777) may be written by every user")
        assert "as config.json," in warned[0]

        (top / "config.json").write_text("{}")
        assert _warned(caplog, top) == []  # the sticky bit keeps others from replacing them


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a file to another user")
def test_another_users_file_in_a_sticky_directory_is_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with reachable_directory() as top:
        top.chmod(0o1777)
        (top / "calls.db").write_text("")
        (top / "config.json").write_text("{}")
        os.chown(top / "config.json", NOBODY, NOBODY)
        (top / "config.json").chmod(0o600)
        warned = _warned(caplog, top)
        assert len(warned) == 1, warned
        assert f"as config.json (it is uid {NOBODY}'s now), which" in warned[0]


def test_a_directory_others_cannot_reach_is_not_warned_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with reachable_directory() as top:
        inner = top / "inner"
        inner.mkdir()
        inner.chmod(0o777)
        top.chmod(0o700)  # no other user gets to inner
        assert _warned(caplog, inner) == []


def test_a_directory_not_made_yet_is_not_warned_of(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    assert _warned(caplog, tmp_path / "not" / "yet") == []
