"""A failure that repeats (a database outage) is logged once a minute, not once per attempt."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from common.repeats import OneLineRepeats, Outage, Repeats
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


def test_the_kinds_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key per customer webhook receiver (a client names as many as it likes) was kept
    for good: ~217 B each, 17 MB a day at 60 calls a minute to new host names."""
    from common import repeats as module

    monkeypatch.setattr(module, "MAX_KEYS", 100)
    clock = FakeClock(1000.0)
    repeats = Repeats(60.0, clock)
    for n in range(100):
        assert repeats.due(f"retrying https://h{n}.example") == ""
    assert repeats.due("retrying https://h0.example") is None  # a minute has not passed
    clock.advance(30.0)
    for n in range(100, 1000):
        assert repeats.due(f"retrying https://h{n}.example") == ""
        assert len(repeats._said) <= 100
    clock.advance(61.0)
    assert repeats.due("retrying https://h999.example") == ""  # said again, as before


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


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # libpq's and asyncpg's other places for a password: the query string
        (
            "postgresql://calls@127.0.0.1:1/postgres?password=TopSecret9",
            "postgresql://calls@127.0.0.1:1/postgres?password=***",
        ),
        (
            "postgresql://u:TopSecret9@h/db?sslmode=verify-full&sslpassword=TopSecret9",
            "postgresql://u:***@h/db?sslmode=verify-full&sslpassword=***",
        ),
        # a name asyncpg would read the same (decoded) or send to the server as a setting
        ("postgres://u@h/db?pass%77ord=TopSecret9", "postgres://u@h/db?pass%77ord=***"),
        ("postgres://u@h/db?PASSWORD=TopSecret9&x_token=TopSecret9", None),
        # the unix-socket form, and several hosts: what an operator needs stays
        (
            "postgresql:///calls?host=/run/pg&user=app&password=TopSecret9&passfile=/etc/pgpass",
            "postgresql:///calls?host=/run/pg&user=app&password=***&passfile=/etc/pgpass",
        ),
        (
            "postgresql://app:TopSecret9@h1:5432,[::1]:5433/calls?target_session_attrs=rw",
            "postgresql://app:***@h1:5432,[::1]:5433/calls?target_session_attrs=rw",
        ),
        # unencoded `@`, `/`, `?` in a password: masked whole, or the URL is named, not quoted
        ("postgresql://app:Top@Secret9@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:12/TopSecret9@h/db", "DATABASE_URL"),
        ("postgresql://app:12?TopSecret9=1@h/db", "DATABASE_URL"),
        ("postgresql://app@h/db?password=Top&Secret9", "DATABASE_URL"),
    ],
)
def test_a_database_url_shows_no_password_wherever_it_is(url: str, shown: str | None) -> None:
    """`cannot connect to postgresql://calls@127.0.0.1:1/postgres?password=TopSecret9`: only
    the user info's password was masked."""
    assert "TopSecret9" not in masked(url) and "Secret9" not in masked(url)
    if shown is not None:
        assert masked(url) == shown


def test_an_outage_held_open_says_how_long_it_failed_not_how_long_until_said() -> None:
    """An outage ending within a minute of the last one said goes on unsaid (d285bee) until
    a success after that minute: its length is to its first success after its last failure,
    not to that later one (back after 10 s, it read 'for 50 s')."""
    clock = FakeClock(1000.0)
    repeats, outage = Repeats(60.0, clock), Outage(60.0, clock)
    outage.failed("unreachable")
    assert repeats.due("unreachable") == ""
    ended = outage.ended(repeats)  # back at once: said
    assert ended is not None and ended.lasted_s == 0.0
    clock.advance(10.0)
    outage.failed("unreachable")  # failing again for 10 s
    assert repeats.due("unreachable") == ""
    clock.advance(10.0)
    outage.failed("unreachable")
    assert repeats.due("unreachable") is None
    assert outage.ended(repeats) is None  # back within the minute: not said yet
    clock.advance(40.0)
    ended = outage.ended(repeats)  # a success after that minute says it
    assert ended is not None and (ended.lasted_s, ended.held) == (10.0, 1)


class _Meanwhile:
    """A step of another thread run in the middle of a loop (where a thread switch may fall)."""

    def __init__(self, step: Callable[[], object]) -> None:
        self.step = step

    def __contains__(self, key: object) -> bool:
        self.step()
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def test_a_kind_noted_by_another_thread_while_held_back_ones_are_read_is_kept() -> None:
    """config.json's writes note their failures from the seed's callers' threads: a kind
    added while `held_back` read the kinds made the loop raise "dictionary changed size
    during iteration"."""
    repeats = Repeats(60.0, FakeClock(1000.0))
    assert repeats.due("write 28") == ""
    assert repeats.due("write 28") is None
    meanwhile = _Meanwhile(lambda: repeats.due("lock 37"))
    assert repeats.held_back(all_kinds=True, keys=meanwhile) == [("write 28", 1, 0.0)]
    assert repeats.due("lock 37") is None  # noted meanwhile: its minute runs


def test_a_kind_failing_in_another_thread_as_an_outage_ends_starts_the_next_one() -> None:
    """config.json's writes note failures and successes from the seed's callers' threads: a
    failure noted while an outage's end forgot its kinds made the loop over them raise "set
    changed size during iteration" (or its length None - None), out of a write that was made.
    It is the next outage now."""
    clock = FakeClock(1000.0)
    outage = Outage(60.0, clock)

    class Forgetting(Repeats):
        def forget(self, key: str) -> int:
            other = threading.Thread(target=outage.failed, args=("lock 37",))
            other.start()  # another thread's write fails meanwhile
            other.join(timeout=2.0)
            return super().forget(key)

    repeats = Forgetting(60.0, clock)
    outage.failed("write 28")
    assert repeats.due("write 28") == ""
    ended = outage.ended(repeats)
    assert ended is not None and (ended.first, ended.held) == ("write 28", 0)
    assert outage.kinds == {"lock 37"}
