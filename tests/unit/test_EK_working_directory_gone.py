"""A server, an agent or a script of the seed's functions started from a shell whose directory
was removed since (a checkout cloned again, a deploy that replaced it) stops with one line
saying so, not a FileNotFoundError traceback naming no file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
GONE = "the working directory no longer exists"


def test_settings_say_the_working_directory_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = tmp_path / "checkout"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()

    # Was FileNotFoundError: [Errno 2] No such file or directory (os.path.realpath)
    with pytest.raises(SettingsError, match=GONE):
        load_settings()


def test_the_server_started_there_says_it_in_one_line(tmp_path: Path) -> None:
    gone = tmp_path / "checkout"
    gone.mkdir()
    # The child enters the directory, which is then removed, and runs the server from it.
    script = f"import os, runpy, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r});"
    script += f" sys.argv = ['server.py']; runpy.run_path({str(ROOT / 'server.py')!r},"
    script += " run_name='__main__')"
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_PATH", "CALLS_DB_PATH")}
    done = subprocess.run(  # noqa: S603 - fixed arguments
        # -P: no '' (the removed directory) on sys.path, as `python server.py` has none;
        # Python 3.13.0 failed an import from it ("SystemError: error return without
        # exception set" importing socket) before server.py ran
        [sys.executable, "-P", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**env, "PYTHONPATH": str(ROOT)},
    )

    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"configuration error: {GONE}"), done.stderr
    assert "Traceback" not in done.stderr
