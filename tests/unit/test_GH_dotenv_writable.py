"""A `.env` every user of the machine may write: `cp .env.example .env` under umask 000 makes
it 0666 (seen with the real server.py, which started without a word about it when the file
held no secret). Any local user could then change the server's settings for its next start,
LIVEKIT_URL or CALLS_WEBHOOK_URL among them: where its calls and their transcripts go. It is
now a start-up warning (the server's and the agent worker's, both from dotenv_warnings)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import dotenv_warnings
from tests.processes import reachable_directory


@pytest.fixture
def where() -> Iterator[Path]:
    with reachable_directory("GH-dotenv-") as made:
        yield made


def dotenv(where: Path, mode: int) -> Path:
    path = where / ".env"
    path.write_text("PORT=8001\nSANDBOX_PORT=0\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o662])
def test_a_dotenv_others_may_write_is_said(where: Path, mode: int) -> None:
    path = dotenv(where, mode)
    said = [w for w in dotenv_warnings(path) if "may be written" in w]
    assert said == [
        f"{path} (mode {mode:04o}) may be written by every user of this machine: any of them"
        " may change these settings for the next start (LIVEKIT_URL, CALLS_WEBHOOK_URL: where"
        " calls and their transcripts go): chmod o-w it"
    ]


@pytest.mark.parametrize("mode", [0o644, 0o664, 0o600])
def test_one_they_may_not_write_is_not(where: Path, mode: int) -> None:
    assert not [w for w in dotenv_warnings(dotenv(where, mode)) if "may be written" in w]


def test_nor_one_they_cannot_reach(where: Path) -> None:
    closed = where / "closed"
    closed.mkdir()
    path = dotenv(closed, 0o666)
    os.chmod(closed, 0o700)
    assert not [w for w in dotenv_warnings(path) if "may be written" in w]
