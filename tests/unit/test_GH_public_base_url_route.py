"""PUBLIC_BASE_URL set to a route of the server rather than its base: the README's
"<it>/agent/reports" read as the reports' own URL, or LiveKit's webhook URL copied over
(`https://lb.example.com/webhooks/livekit`). The server started, and every report of every
call went to `.../webhooks/livekit/agent/reports`: 404, which agents never retry, so each
call's answer, transcript and analysis were lost, with nothing in the server's log (seen with
the real server.py and the embedded sandbox's agent). It now stops start-up, saying the base
URL to set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from common.settings import SettingsError, settings_from_env
from tests.processes import free_port, run_to_end

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"PUBLIC_BASE_URL": "https://lb.example.com/agent/reports"}, "https://lb.example.com"),
        (
            {"PUBLIC_BASE_URL": "https://lb.example.com/voice/agent/reports/"},
            "https://lb.example.com/voice",
        ),
        ({"PUBLIC_BASE_URL": "https://lb.example.com/webhooks/livekit"}, "https://lb.example.com"),
        (
            {"PUBLIC_BASE_URL": "https://lb.example.com/voice/lk/", "WEBHOOK_PATH": "/lk"},
            "https://lb.example.com/voice",
        ),
    ],
)
def test_a_route_as_the_base_url_is_refused(env: dict[str, str], fix: str) -> None:
    with pytest.raises(SettingsError) as refused:
        settings_from_env(env, config_file_read=False)
    said = str(refused.value)
    assert said.startswith("PUBLIC_BASE_URL ends with /"), said
    assert said.endswith(f"set it to {fix}"), said


@pytest.mark.parametrize(
    "url",
    [
        "https://lb.example.com",
        "https://lb.example.com/voice/",  # a proxy's path prefix
        "https://lb.example.com/agent",  # a prefix named like the route's first part
        "https://lb.example.com/xagent/reports",
        "https://lb.example.com/webhooks",
    ],
)
def test_a_base_url_is_taken(url: str) -> None:
    settings = settings_from_env({"PUBLIC_BASE_URL": url}, config_file_read=False)
    assert settings.report_url == url.rstrip("/") + "/agent/reports"


def test_the_server_stops_at_start_up_saying_so(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "CALLS_"))}
    environ.update(
        CONFIG_PATH=str(tmp_path / "config.json"),
        CALLS_DB_PATH=str(tmp_path / "c.db"),
        SANDBOX_PORT="0",
        PORT=str(free_port()),
        PUBLIC_BASE_URL="https://lb.example.com/webhooks/livekit",
    )
    done = run_to_end([sys.executable, str(ROOT / "server.py")], tmp_path, environ, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "configuration error: PUBLIC_BASE_URL ends with /webhooks/livekit" in done.stderr
    assert not (tmp_path / "c.db").exists()
