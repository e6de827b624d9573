"""A `.env` holding secrets that every user of the machine may read (`cp .env.example .env`
makes it 0644 under the usual umask) is a start-up warning, naming the secrets it holds, never
their values: any local user could sign LiveKit webhooks and agent reports with
LIVEKIT_API_SECRET, or place calls with CALLS_API_TOKEN. The server already said so of
config.json and calls.db, which hold less."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import dotenv_warnings
from tests.processes import reachable_directory

SECRET = "s3cretS3cretS3cretS3cretS3cretS3cret"


@pytest.fixture
def open_tmp_path() -> Iterator[Path]:
    """A directory other users may pass through (pytest's tmp_path is under a 0700 one)."""
    with reachable_directory() as path:
        yield path


def test_a_readable_dotenv_with_secrets_is_warned_of_by_name(open_tmp_path: Path) -> None:
    path = open_tmp_path / ".env"
    path.write_text(
        f"LIVEKIT_URL=wss://calls-3f9a.livekit.cloud\nLIVEKIT_API_SECRET={SECRET}\n"
        f"CALLS_API_TOKEN={SECRET}\nCALLS_WEBHOOK_SECRET=\n"
    )
    path.chmod(0o644)

    warnings = dotenv_warnings(path)

    assert warnings == [
        f"{path} (mode 0644) may be read by every user of this machine, and it holds"
        " LIVEKIT_API_SECRET, CALLS_API_TOKEN: chmod o-rwx it"
    ]
    assert SECRET not in warnings[0]


def test_a_private_dotenv_or_one_without_secrets_is_not(tmp_path: Path) -> None:
    private = tmp_path / "private.env"
    private.write_text(f"LIVEKIT_API_SECRET={SECRET}\n")
    private.chmod(0o640)  # group access is left alone (an agent of another user)
    public = tmp_path / "public.env"
    public.write_text("PORT=8001\nCALLS_API_TOKEN=\n")  # an empty secret is the default
    public.chmod(0o644)

    assert dotenv_warnings(private) == []
    assert dotenv_warnings(public) == []
