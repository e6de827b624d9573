"""`make agent` on a newcomer's first day, beside `make run` on the embedded sandbox.

With nothing set, `python -m agent start` said only that LIVEKIT_URL, the LiveKit key and
secret and the three providers' keys were missing: read as if calls needed a worker, and a
LiveKit and provider accounts, to be tried. The sandbox plays the agent itself; the line now
says so when LIVEKIT_URL is among what is missing, and only then. And a worker stopped so
leaves no empty `agent-reports/` behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_agent_cli import LIVEKIT_AND_OPENAI, run_agent_here, run_agent_to_livekit

# The providers' settings of a worker that runs (its keys, a model it does not warn of).
PROVIDER_KEYS = {
    "OPENAI_API_KEY": "sk-test",
    "OPENAI_MODEL": "gpt-4.1-mini",
    "DEEPGRAM_API_KEY": "dg",
    "CARTESIA_API_KEY": "ca",
}

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


def test_a_worker_stopped_for_missing_settings_makes_no_spool_directory(tmp_path: Path) -> None:
    """It made AGENT_REPORT_SPOOL_DIR (`agent-reports/`, relative to the working directory)
    before it said what was missing: `make agent` tried once without keys left an empty
    directory behind, in the checkout or wherever it was run from."""
    proc = run_agent_here(["start"], tmp_path, OPENAI_MODEL="gpt-4.1-mini")

    assert proc.returncode == 2
    assert "missing LIVEKIT_URL" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_runs_still_makes_its_spool_directory(tmp_path: Path) -> None:
    proc, handed = run_agent_to_livekit(
        ["console"],
        tmp_path,
        **PROVIDER_KEYS,
    )

    assert proc.returncode == 0, proc.stderr
    assert handed == ["console"]
    assert (tmp_path / "agent-reports").is_dir()


def test_a_worker_that_runs_still_warns_of_an_unusable_spool_directory(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    proc, _handed = run_agent_to_livekit(
        ["console"],
        tmp_path,
        **PROVIDER_KEYS,
        AGENT_REPORT_SPOOL_DIR=str(tmp_path / "a-file"),
    )

    assert proc.returncode == 0, proc.stderr
    spool = tmp_path / "a-file"
    said = f"agent: warning: AGENT_REPORT_SPOOL_DIR ({spool}) cannot be written ({spool} is a file"
    assert said in proc.stderr, proc.stderr
