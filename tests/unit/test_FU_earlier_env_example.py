"""A `.env` made from an earlier release's `.env.example`, kept across the upgrade.

The first release's `.env.example` (2026-11-26 to 2026-12-03) showed the API token as
`# CALLS_API_TOKEN=change-me-to-a-long-random-string` and the trunk as
`# SIP_OUTBOUND_TRUNK_ID=ST_xxxxxxxxxxxx`. Uncommented as they were ("fill in what you need"),
the server took both: the token is 33 printable characters, so it passed every check, and with
HOST=0.0.0.0 (which a token allows) the API (placing calls, transcripts, the do-not-call list)
was open to anyone who has read that file: it is public, in this project's history. Today's
`.env.example` examples and the seed's placeholders already stopped start-up; these did not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import SettingsError, load_settings, settings_from_env

REAL = {
    "LIVEKIT_URL": "wss://calls-3f9a.livekit.cloud",
    "LIVEKIT_API_KEY": "APIk3yF0rReal",
    "LIVEKIT_API_SECRET": "s3cretS3cretS3cretS3cretS3cretS3cret",
    "SIP_OUTBOUND_TRUNK_ID": "ST_abc123",
}
FIRST_RELEASE_TOKEN = "change-me-to-a-long-random-string"
FIRST_RELEASE_TRUNK = "ST_xxxxxxxxxxxx"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLS_API_TOKEN", FIRST_RELEASE_TOKEN),
        ("CALLS_API_TOKEN_PREVIOUS", FIRST_RELEASE_TOKEN),  # "the old one", while rotating
        ("SIP_OUTBOUND_TRUNK_ID", FIRST_RELEASE_TRUNK),
    ],
)
def test_an_earlier_env_examples_value_stops_start_up(name: str, value: str) -> None:
    given = {**REAL, name: value}
    if name == "CALLS_API_TOKEN_PREVIOUS":
        given["CALLS_API_TOKEN"] = "a-real-token-0123456789abcdef"

    with pytest.raises(SettingsError, match=f"^{name} is an example's value") as caught:
        settings_from_env(given, config_file_read=False)

    assert value not in str(caught.value)  # a secret's place: never echoed


def test_the_first_releases_env_example_uncommented_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lines as they were, the token's uncommented, listening beyond loopback."""
    for name in ("HOST", "PORT", "CALLS_API_TOKEN", "LIVEKIT_URL", "CALLS_DB_PATH"):
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# --- HTTP server ---\n"
        "# Address and port to listen on. Without CALLS_API_TOKEN only loopback is allowed.\n"
        "HOST=0.0.0.0\n"
        "PORT=8000\n"
        "# Bearer token required on every /calls request. Required to listen beyond loopback.\n"
        f"CALLS_API_TOKEN={FIRST_RELEASE_TOKEN}\n"
        "CALLS_DB_PATH=calls.db\n",
        encoding="utf-8",
    )

    with pytest.raises(SettingsError, match="^CALLS_API_TOKEN is an example's value"):
        load_settings(dotenv, config_file_read=False)


def test_a_token_of_ones_own_starts() -> None:
    settings = settings_from_env(
        {**REAL, "CALLS_API_TOKEN": "change-me-to-a-long-random-string-2026"},
        config_file_read=False,
    )

    assert settings.calls_api_token is not None
