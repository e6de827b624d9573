"""`make run` where python3 has no venv module (Debian or Ubuntu without python3-venv, which
README's Quickstart names): `python3 -m venv .venv` makes .venv/bin/python, then fails on
ensurepip. make kept that half-made .venv, so after `apt-get install python3-venv`, as the
error says, every `make run` failed with ".venv/bin/python: No module named pip" until a
`make clean` nothing mentioned. Now a failed creation leaves no .venv behind."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# What Debian's python3 does without python3-venv: the venv's python made, then exit 1.
HALF_A_VENV = """#!/bin/sh
mkdir -p "$3/bin" && touch "$3/bin/python" && chmod +x "$3/bin/python"
echo "The virtual environment was not created successfully because ensurepip is not available." >&2
exit 1
"""


def run_make(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make -s ARGS` in `directory` (a copy of the Makefile), as a user runs it."""
    return subprocess.run(  # noqa: S603 - fixed arguments
        ["make", "-s", *args],  # noqa: S607 - make on PATH
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MAKEFLAGS": ""},
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_venv_whose_creation_failed_is_not_left_half_made(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    python = tmp_path / "python-without-venv"
    python.write_text(HALF_A_VENV)
    python.chmod(0o755)

    done = run_make(tmp_path, ".venv/bin/python", f"PYTHON={python}")

    assert done.returncode != 0
    assert "ensurepip is not available" in done.stderr
    # Was .venv/bin/python left there: the next `make run` skipped making the venv and
    # failed with "No module named pip" for good.
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_venv_without_pip_made_before_says_to_make_clean(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    # a .venv an earlier release's Makefile left half-made: its python has no pip
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(  # a 3.11 or later without pip
        '#!/bin/sh\ncase "$2" in *version_info*) exit 0;; esac\n'
        "echo 'No module named pip' >&2\nexit 1\n"
    )
    python.chmod(0o755)

    done = run_make(tmp_path, ".venv/.installed")

    assert done.returncode != 0
    assert done.stderr.startswith(".venv has no pip (made by a python without its venv module"), (
        done.stderr
    )
    assert "run make clean, then this again" in done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_venv_of_an_older_python_says_which_and_what_to_do(tmp_path: Path) -> None:
    """`python3` 3.10 made .venv: pip's "requires a different Python: 3.10.12 not in
    '>=3.11'" said nothing of `make clean` nor PYTHON=, and the same .venv was reused by
    `make run PYTHON=python3.12` (README's advice without its `make clean`)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(  # a 3.10: the version check fails, and it says its version
        '#!/bin/sh\ncase "$2" in *version_info*) exit 1;; *python_version*) echo 3.10.12;; esac\n'
    )
    python.chmod(0o755)

    done = run_make(tmp_path, ".venv/.installed", "PYTHON=python3.12")

    assert done.returncode != 0
    assert done.stderr.startswith(
        ".venv runs Python 3.10.12, and this project needs 3.11 or later: run make clean, then"
        " this again with PYTHON=python3.11 (or newer)"
    ), done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_alone_lists_the_targets_and_makes_nothing(tmp_path: Path) -> None:
    """`make` with no target made .venv/bin/python (the Makefile's first rule) and stopped,
    without a word of `make run` or `make test`; `make help` was no rule at all."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    alone = run_make(tmp_path, "PYTHON=false")  # a venv it tried to make would fail here
    helped = run_make(tmp_path, "help")

    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == helped.stdout
    targets = [line.split()[1] for line in alone.stdout.splitlines() if line.startswith("make ")]
    assert targets == [
        "run", "test", "lint", "typecheck", "pytest", "agent", "sandbox", "bench", "clean"
    ]  # fmt: skip
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_test_runs_mypy_at_the_lowest_priority_and_typecheck_as_is(tmp_path: Path) -> None:
    """`make test` runs mypy beside the suite under `nice -n 19` (its CPU in the time the
    suite leaves a core idle, not taken from the workers); `make typecheck` runs it plain."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    (tmp_path / ".venv" / ".installed").touch()  # installed, newer than pyproject.toml

    planned = run_make(tmp_path, "-n", "test")
    alone = run_make(tmp_path, "-n", "typecheck")

    assert planned.returncode == 0 and alone.returncode == 0, planned.stderr + alone.stderr
    assert "nice -n 19 .venv/bin/mypy" in planned.stdout.splitlines(), planned.stdout
    assert any(
        line.startswith("PYTHONDONTWRITEBYTECODE= .venv/bin/pytest -n")
        for line in planned.stdout.splitlines()
    ), planned.stdout
    assert alone.stdout.splitlines() == [".venv/bin/mypy"]
