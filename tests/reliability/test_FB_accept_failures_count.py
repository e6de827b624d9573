"""A burst of failed accepts that stops is counted in the log, not left at its first line.

asyncio logs "socket.accept() out of system resource" at each failed accept of a listening
socket (all descriptors in use); AcceptFailures (856ee95) lets one through a minute per
socket and holds the rest back, their count said only by the next line let through. A live
server with an open files limit of 120, hit by 200 connections held 4 s, logged that line
once and never how many more there were, not even as it stopped: the log read as one failed
connection. What was held back is said once its minute is over, and as the server stops.
"""

from __future__ import annotations

import errno
import logging

import pytest

from common.repeats import ACCEPT_FAILED, AcceptFailures
from tests.conftest import AppFactory


def failed_accept(socket_text: str) -> None:
    error = OSError(errno.EMFILE, "Too many open files")
    # As asyncio's default exception handler logs it: its text as the message itself.
    text = f"{ACCEPT_FAILED}\nsocket: {socket_text}"
    logging.getLogger("asyncio").error(text, exc_info=(OSError, error, None))


def held_back_lines(caplog: pytest.LogCaptureFixture, socket_text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "asyncio" and "more like" in r.getMessage() and socket_text in r.getMessage()
    ]


def test_what_was_held_back_is_said_once_its_minute_is_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The process's own filter (an app started earlier in this worker installed it) would
    # hold the burst back before this one saw it.
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    now = [0.0]
    folded = AcceptFailures(clock=lambda: now[0])
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    asyncio_logger = logging.getLogger("asyncio")
    handler = Keep()
    asyncio_logger.addHandler(handler)
    asyncio_logger.addFilter(folded)
    try:
        for _ in range(500):
            failed_accept("<fd=3 laddr=('127.0.0.1', 8000)>")
        folded.say_held_back()  # its minute not over: nothing yet
        assert len(said) == 1
        now[0] = 61.0
        folded.say_held_back()
    finally:
        asyncio_logger.removeFilter(folded)
        asyncio_logger.removeHandler(handler)
    assert len(said) == 2, said
    assert said[1].startswith("499 more like 'socket.accept() out of system resource")
    assert "in the last 61 s" in said[1]


async def test_what_was_held_back_is_said_as_the_server_stops(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await start_app()
    caplog.set_level(logging.ERROR, logger="asyncio")
    socket_text = "<fd=97 laddr=('127.0.0.1', 1)> (FB)"
    for _ in range(3):
        failed_accept(socket_text)
    assert held_back_lines(caplog, socket_text) == []
    await client.close()
    lines = held_back_lines(caplog, socket_text)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"2 more like '{ACCEPT_FAILED}")
