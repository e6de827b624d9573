"""Reliability suite fixtures: scaled counts, a figures report, and a guard on every test's logs.

`RELIABILITY_SCALE` (default 1) multiplies the suite's counts: `RELIABILITY_SCALE=10 make test`
runs ten times the writes, kills, examples and calls. The figures each test measured (counts
tried, counts held, time) are printed at the end of the run under "reliability figures".

Every test here runs under `log_guard`: all log records at INFO (the production level) are
captured, and the test fails if any contains an API token, a LiveKit secret, a JWT or a full
phone number (every number a sandbox was asked to dial is known to the guard).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from common.settings import DEV_API_SECRET
from sandbox import Sandbox

SCALE = float(os.environ.get("RELIABILITY_SCALE", "1"))

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*")
FULL_NUMBER = re.compile(r"\+[0-9]{8,15}(?![0-9])")
DIGIT_RUN = re.compile(r"[0-9]{8,}")


def scaled(count: int, minimum: int = 1) -> int:
    """`count` at the default scale, times RELIABILITY_SCALE."""
    return max(minimum, round(count * SCALE))


_FIGURES: list[tuple[str, str]] = []


@dataclass
class Figures:
    """What one test tried and what held, for the end-of-run report."""

    test: str

    def add(self, text: str) -> None:
        _FIGURES.append((self.test, text))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid.removeprefix("tests/reliability/"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"reliability figures (RELIABILITY_SCALE={SCALE:g})")
    for test, text in _FIGURES:
        terminalreporter.write_line(f"{test}: {text}")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append((record.levelno, record.name, self.format(record)))
        except Exception:  # a record that cannot be formatted is itself a finding
            self.lines.append((logging.ERROR, record.name, f"UNFORMATTABLE {record.msg!r}"))


@dataclass
class LogGuard:
    """Captured log lines, and what must never appear in them."""

    capture: _Capture
    secrets: set[str] = field(default_factory=lambda: {DEV_API_SECRET})
    numbers: set[str] = field(default_factory=set)
    sandboxes: list[Sandbox] = field(default_factory=list)
    extra_text: list[str] = field(default_factory=list)

    def hide(self, *secrets: str) -> None:
        """Secrets (tokens, keys) that must never be logged."""
        self.secrets.update(s for s in secrets if s)

    def hide_numbers(self, *numbers: str) -> None:
        """Phone numbers that must never be logged in full."""
        self.numbers.update(numbers)

    def scan(self, text: str) -> None:
        """Also check `text` (e.g. a subprocess's log output) at teardown."""
        self.extra_text.append(text)

    def at_least(self, level: int) -> list[str]:
        return [line for lvl, _, line in self.capture.lines if lvl >= level]

    def problems(self) -> list[str]:
        """Every forbidden thing found in the logs, with where (empty when the logs are clean).

        The report names the logger and shows the thing cut short, so it leaks nothing itself.
        """
        numbers = set(self.numbers)
        for box in self.sandboxes:
            numbers.update(
                str(r.body["sip_call_to"]) for r in box.requests if r.body.get("sip_call_to")
            )
        digit_runs = {n.lstrip("+") for n in numbers if len(n.lstrip("+")) >= 8}
        lines = [(name, line) for _, name, line in self.capture.lines]
        lines += [("subprocess", text) for text in self.extra_text]
        found: list[str] = []
        for name, line in lines:
            found += [f"secret {s[:4]}… in {name}" for s in self.secrets if s in line]
            found += [f"JWT {m.group()[:12]}… in {name}" for m in JWT.finditer(line)]
            found += [f"number {m.group()[:4]}… in {name}" for m in FULL_NUMBER.finditer(line)]
            for run in DIGIT_RUN.findall(line):
                found += [f"number {d[:3]}… in {name}" for d in digit_runs if d in run]
        return found


@pytest.fixture(autouse=True)
def log_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogGuard]:
    capture = _Capture()
    guard = LogGuard(capture)
    original_start = Sandbox.start

    async def start(self: Sandbox) -> None:
        guard.sandboxes.append(self)
        await original_start(self)

    monkeypatch.setattr(Sandbox, "start", start)
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    try:
        yield guard
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
    problems = guard.problems()
    assert problems == [], f"logs leaked: {sorted(set(problems))}"


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Processes a test starts (servers, sandboxes): each stopped at the end, whatever happens."""
    started: list[Any] = []
    yield started
    for process in started:
        process.stop()
