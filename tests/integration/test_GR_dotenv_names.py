"""A `.env` name that leaves a word of a setting's out is said at start-up, as a misspelt one is.

README promises a start-up warning for a name in `.env` close to a setting's. Spelling alone
(difflib's ratio) said `CALL_MAX_ACTIV` and `LIVEKIT_SECRET`, but not `LIVEKIT_KEY`,
`SIP_TRUNK_ID` or `WEBHOOK_URL` (as a call's own `webhook_url` is named): each was read as
unset without a word, `WEBHOOK_URL` leaving customer webhooks off and `CALLS_RATE_LIMIT=5`
the rate at 60 a minute.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import dotenv_warnings
from tests.integration.test_startup import run_server


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("WEBHOOK_URL", "CALLS_WEBHOOK_URL"),
        ("WEBHOOK_SECRET", "CALLS_WEBHOOK_SECRET"),
        ("LIVEKIT_KEY", "LIVEKIT_API_KEY"),
        ("SIP_TRUNK_ID", "SIP_OUTBOUND_TRUNK_ID"),
        ("CALLS_RATE_LIMIT", "CALLS_RATE_LIMIT_PER_MIN"),
        ("OPENAI_KEY", "OPENAI_API_KEY"),
        ("API_TOKEN", "CALLS_API_TOKEN"),  # not CALLS_API_TOKEN_PREVIOUS: more words besides
        ("MAX_DURATION_S", "CALL_MAX_DURATION_S"),
    ],
)
def test_a_name_missing_a_word_of_a_setting_is_warned(
    tmp_path: Path, written: str, meant: str
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"{written}=value-never-shown\n")
    dotenv.chmod(0o600)
    assert dotenv_warnings(dotenv) == [
        f"{written} ({dotenv} line 1) is no setting of this server: did you mean {meant}? (it is"
        " read as unset)"
    ]


@pytest.mark.parametrize(
    "written",
    # Any of four providers' keys, either base URL; other programs' names; one word alone
    ["API_KEY", "BASE_URL", "TWILIO_AUTH_TOKEN", "REDIS_URL", "SECRET_KEY", "UNRELATED_TOOL"],
)
def test_a_name_that_could_mean_several_settings_or_none_is_not_warned(
    tmp_path: Path, written: str
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"{written}=x\nTOKEN=x\n")
    dotenv.chmod(0o600)
    assert dotenv_warnings(dotenv) == []


def test_the_server_says_a_webhook_url_under_a_shorter_name_is_not_read(tmp_path: Path) -> None:
    """The real server, with a `.env` giving the customer webhook URL and secret as a call's
    `webhook_url` is named: it started with customer webhooks off, and said nothing of it."""
    (tmp_path / ".env").write_text(
        "WEBHOOK_URL=https://hooks.example.org/calls\nWEBHOOK_SECRET=whsec_never-shown\n"
    )
    (tmp_path / ".env").chmod(0o600)
    done = run_server(tmp_path, CALLS_DB_PATH="/dev/null")
    assert done.returncode == 2, done.stderr  # stopped by the database, after the warnings
    assert (
        "WEBHOOK_URL (.env line 1) is no setting of this server: did you mean CALLS_WEBHOOK_URL?"
        in done.stderr
    )
    assert (
        "WEBHOOK_SECRET (.env line 2) is no setting of this server: did you mean"
        " CALLS_WEBHOOK_SECRET?" in done.stderr
    )
    assert "never-shown" not in done.stderr and "hooks.example.org" not in done.stderr
