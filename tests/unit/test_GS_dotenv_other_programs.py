"""A `.env` shared with other programs is not said to misspell this server's settings.

The start-up warning for a name close to a setting's compared spelling alone (difflib, 0.85):
in a `.env` a compose file shares with its database, or a LiveKit project's with its inbound
agent, the real server.py warned "DATABASE_USER ... is no setting of this server: did you
mean DATABASE_URL? (it is read as unset)" and "SIP_INBOUND_TRUNK_ID ... did you mean
SIP_OUTBOUND_TRUNK_ID?", sending the operator to rename another program's setting into one
of this server's (DATABASE_URL=app switches the database). A name with another word in a
setting's place is another program's; a misspelt or shortened word is still said.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import dotenv_warnings


@pytest.mark.parametrize(
    "written",
    ["DATABASE_USER", "SIP_INBOUND_TRUNK_ID", "DATABASE_POOL_MIN", "database_user"],
)
def test_another_programs_name_is_not_said(tmp_path: Path, written: str) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"DATABASE_HOST=db\n{written}=value-never-shown\nREDIS_URL=redis://r\n")
    dotenv.chmod(0o600)
    assert dotenv_warnings(dotenv) == []


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("CALL_MAX_ACTIV", "CALLS_MAX_ACTIVE"),
        ("DATABASE_URI", "DATABASE_URL"),
        ("CALLS_ALLOWED_COUNTRY", "CALLS_ALLOWED_COUNTRIES"),
        ("CALL_RING_TIMEOUT_S", "CALL_RINGING_TIMEOUT_S"),
        ("LOG_FORMATTER", "LOG_FORMAT"),
        ("LOGLEVEL", "LOG_LEVEL"),
        ("port", "PORT"),
        ("WEBHOOK_URL", "CALLS_WEBHOOK_URL"),
    ],
)
def test_a_misspelt_setting_is_still_said(tmp_path: Path, written: str, meant: str) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"{written}=value-never-shown\n")
    dotenv.chmod(0o600)
    assert dotenv_warnings(dotenv) == [
        f"{written} ({dotenv} line 1) is no setting of this server: did you mean {meant}?"
        " (it is read as unset)"
    ]
