"""`make agent` on a newcomer's first day, beside `make run` on the embedded sandbox.

With nothing set, `python -m agent start` said only that LIVEKIT_URL, the LiveKit key and
secret and the three providers' keys were missing: read as if calls needed a worker, and a
LiveKit and provider accounts, to be tried. The sandbox plays the agent itself; the line now
says so when LIVEKIT_URL is among what is missing, and only then.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_agent_cli import LIVEKIT_AND_OPENAI, run_agent_here

SANDBOX_HINT = (
    "Without LIVEKIT_URL, `make run` places calls on its embedded sandbox, which plays the"
    " agent itself: no worker is needed to try calls"
)


@pytest.mark.parametrize("command", ["start", "dev", "connect"])
def test_a_worker_without_livekit_url_says_the_sandbox_needs_none(
    tmp_path: Path, command: str
) -> None:
    proc = run_agent_here([command], tmp_path, OPENAI_MODEL="gpt-4.1-mini")

    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line  # one line, as every settings error
    assert line.startswith(f"agent: cannot run {command!r}: missing LIVEKIT_URL, ")
    assert SANDBOX_HINT in line
    assert "Running with a real LiveKit project" in line


def test_a_worker_with_livekit_url_is_not_told_of_the_sandbox(tmp_path: Path) -> None:
    proc = run_agent_here(
        ["start"], tmp_path, LIVEKIT_URL="wss://example.livekit.cloud", **LIVEKIT_AND_OPENAI
    )

    assert proc.returncode == 2
    assert "missing DEEPGRAM_API_KEY, CARTESIA_API_KEY" in proc.stderr
    assert "sandbox" not in proc.stderr


def test_console_needs_no_livekit_and_is_not_told_of_the_sandbox(tmp_path: Path) -> None:
    proc = run_agent_here(["console"], tmp_path, OPENAI_MODEL="gpt-4.1-mini")

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "agent: cannot run 'console': missing OPENAI_API_KEY, DEEPGRAM_API_KEY,"
        " CARTESIA_API_KEY (set in the environment or .env)"
    )
