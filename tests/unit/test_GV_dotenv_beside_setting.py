"""A name of another program's beside the setting it resembles, in a `.env` they share, is
not said to be a mistake for that setting.

Since 82602e7 a name holding a setting's words with one left out (`WEBHOOK_SECRET`) is said
to mean the setting, as a misspelt one is. The real server.py, its `.env` shared with the
webhook receiver of the same project (its `WEBHOOK_SECRET`, beside `CALLS_WEBHOOK_SECRET`)
and a script's `DEEPGRAM_KEY`, warned at every start "WEBHOOK_SECRET
(.env line 7) is no setting of this server: did you mean CALLS_WEBHOOK_SECRET? (it is read as
unset)", the setting it named set two lines above and in use. Such a name, a word short of
the setting, is said only while the setting is not given (in `.env` or the environment); a
name of the setting's own words, misspelt or in another case (`port` beside `PORT`), or
with a word added (`CALLS_API_TOKEN_OLD`, a rotation's old token), is said as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import dotenv_warnings


def written_in(tmp_path: Path, text: str) -> Path:
    dotenv = tmp_path / ".env"
    dotenv.write_text(text)
    dotenv.chmod(0o600)
    return dotenv


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("WEBHOOK_SECRET", "CALLS_WEBHOOK_SECRET"),
        ("WEBHOOK_URL", "CALLS_WEBHOOK_URL"),
        ("DEEPGRAM_KEY", "DEEPGRAM_API_KEY"),
        ("API_TOKEN", "CALLS_API_TOKEN"),
    ],
)
def test_a_name_beside_the_setting_it_resembles_is_not_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, theirs: str, ours: str
) -> None:
    monkeypatch.delenv(ours, raising=False)
    dotenv = written_in(tmp_path, f"{ours}=value-in-use\n# the receiver's\n{theirs}=its-own\n")
    assert dotenv_warnings(dotenv) == []


def test_the_setting_given_by_the_environment_counts_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's Environment=, docker's -e: the setting is read, the name beside it is not
    a mistake for it."""
    monkeypatch.setenv("CALLS_WEBHOOK_SECRET", "whsec-from-systemd")
    assert dotenv_warnings(written_in(tmp_path, "WEBHOOK_SECRET=its-own\n")) == []


@pytest.mark.parametrize("ours", ["", "CALLS_WEBHOOK_SECRET=\n", "CALLS_WEBHOOK_SECRET=  \n"])
def test_without_the_setting_the_name_is_still_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ours: str
) -> None:
    """Not given, or given empty (read as unset): the name may be the setting, a word left
    out, and the receivers got no webhook without a word."""
    monkeypatch.setenv("CALLS_WEBHOOK_SECRET", "")
    dotenv = written_in(tmp_path, f"{ours}WEBHOOK_SECRET=value-never-shown\n")
    line = 2 if ours else 1
    assert dotenv_warnings(dotenv) == [
        f"WEBHOOK_SECRET ({dotenv} line {line}) is no setting of this server: did you mean"
        " CALLS_WEBHOOK_SECRET? (it is read as unset)"
    ]


@pytest.mark.parametrize(
    ("written", "meant"),
    [("CALLS_API_TOKEN_OLD", "CALLS_API_TOKEN"), ("LIVEKIT_WS_URL", "LIVEKIT_URL")],
)
def test_a_name_with_a_word_added_beside_its_setting_is_still_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, meant: str
) -> None:
    """`CALLS_API_TOKEN_OLD` beside `CALLS_API_TOKEN`, as a token being rotated is kept:
    read as unset, every client still on the old token is refused 401."""
    monkeypatch.delenv(meant, raising=False)
    dotenv = written_in(tmp_path, f"{meant}=value-in-use\n{written}=value-never-shown\n")
    assert dotenv_warnings(dotenv) == [
        f"{written} ({dotenv} line 2) is no setting of this server: did you mean {meant}?"
        " (it is read as unset)"
    ]


def test_a_misspelling_beside_its_setting_is_still_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`port=8499` below `PORT=8420`, `CALL_MAX_ACTIV` below `CALLS_MAX_ACTIVE`: meant as the
    setting (a change that does not apply), not another program's name."""
    monkeypatch.delenv("PORT", raising=False)
    monkeypatch.delenv("CALLS_MAX_ACTIVE", raising=False)
    dotenv = written_in(tmp_path, "PORT=8420\nport=8499\nCALLS_MAX_ACTIVE=5\nCALL_MAX_ACTIV=9\n")
    assert dotenv_warnings(dotenv) == [
        f"port ({dotenv} line 2) is no setting of this server: did you mean PORT? (it is read"
        " as unset)",
        f"CALL_MAX_ACTIV ({dotenv} line 4) is no setting of this server: did you mean"
        " CALLS_MAX_ACTIVE? (it is read as unset)",
    ]
