"""A failure that repeats (a database outage) is logged once a minute, not once per attempt."""

from __future__ import annotations

import logging

import pytest

from common.repeats import OneLineRepeats, Repeats
from common.storage.postgres import masked
from tests.helpers import FakeClock


def test_the_first_is_said_then_one_a_minute_with_the_count_held_back() -> None:
    clock = FakeClock(1000.0)
    repeats = Repeats(60.0, clock)
    assert repeats.due("db") == ""
    for _ in range(59):
        clock.advance(1.0)
        assert repeats.due("db") is None
    assert repeats.due("other") == ""  # each kind on its own
    clock.advance(1.0)
    assert repeats.due("db") == " (59 more like it in the last 60 s)"
    clock.advance(120.0)
    assert repeats.due("db") == ""  # nothing held back since: said plainly


def test_a_librarys_tracebacks_become_one_line_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(0.0)
    log = logging.getLogger("test.repeats.pool")
    log.addFilter(OneLineRepeats(60.0, clock))
    caplog.set_level(logging.WARNING, logger="test.repeats.pool")
    for _ in range(5):
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        except ConnectionRefusedError:
            log.warning("Failed to restore the pool connection floor; retrying", exc_info=True)
        clock.advance(20.0)
    lines = [(r.getMessage(), r.exc_info) for r in caplog.records]
    assert lines == [
        (
            "Failed to restore the pool connection floor; retrying: ConnectionRefusedError:"
            " [Errno 111] Connect call failed ('127.0.0.1', 5432)",
            None,
        ),
        (
            "Failed to restore the pool connection floor; retrying: ConnectionRefusedError:"
            " [Errno 111] Connect call failed ('127.0.0.1', 5432) (2 more like it in the last"
            " 60 s)",
            None,
        ),
    ]


def test_a_database_url_that_does_not_parse_is_never_quoted() -> None:
    assert masked("postgresql://u:s3cret@h:notaport/db") == "DATABASE_URL"
    assert masked("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
