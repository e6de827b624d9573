""".env.example's example values (the four settings unset by default, uncommented as they
are) and the seed's `.env` placeholders stop start-up, naming the setting: taken, they led
nowhere, some without a word. PUBLIC_BASE_URL=https://calls.example.com (uncommented to fill
in later) sent every agent's reports to a host that is nobody's, with a real LiveKit: no
answer, transcript or analysis reached the server, and it said nothing at start-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common.settings import SettingsError, settings_from_env

ROOT = Path(__file__).resolve().parents[2]
REAL = {
    "LIVEKIT_URL": "wss://calls-3f9a.livekit.cloud",
    "LIVEKIT_API_KEY": "APIk3yF0rReal",
    "LIVEKIT_API_SECRET": "s3cretS3cretS3cretS3cretS3cretS3cret",
    "SIP_OUTBOUND_TRUNK_ID": "ST_abc123",
}


def _examples_in_env_example() -> dict[str, str]:
    """.env.example's commented `# NAME=value` lines of the settings it says are examples."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    lines = re.findall(r"^# ([A-Z_]+)=(\S+)$", text, flags=re.MULTILINE)
    wanted = ("PUBLIC_BASE_URL", "DATABASE_URL", "LIVEKIT_URL", "CALLS_WEBHOOK_URL")
    return {name: value for name, value in lines if name in wanted}


def test_env_example_names_its_four_examples() -> None:
    assert set(_examples_in_env_example()) == {
        "PUBLIC_BASE_URL",
        "DATABASE_URL",
        "LIVEKIT_URL",
        "CALLS_WEBHOOK_URL",
    }


@pytest.mark.parametrize(("name", "value"), sorted(_examples_in_env_example().items()))
def test_an_example_of_env_example_uncommented_as_it_is_stops_start_up(
    name: str, value: str
) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is an example's value"):
        settings_from_env({**REAL, name: value}, config_file_read=False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LIVEKIT_URL", "wss://your-livekit-server.com"),
        ("LIVEKIT_API_KEY", "your_api_key_here"),
        ("LIVEKIT_API_SECRET", "your_api_secret_here"),
        ("PUBLIC_BASE_URL", "https://calls.example.com/"),  # with its last `/`
    ],
)
def test_the_seeds_placeholders_stop_start_up(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is an example's value") as caught:
        settings_from_env({**REAL, name: value}, config_file_read=False)

    assert value not in str(caught.value)  # a secret's place: never echoed


def test_real_values_start() -> None:
    settings = settings_from_env(
        {**REAL, "PUBLIC_BASE_URL": "https://calls.acme-corp.com"}, config_file_read=False
    )

    assert settings.public_base_url == "https://calls.acme-corp.com"
