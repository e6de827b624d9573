"""The per-client sliding-window rate limit, driven by a fake clock."""

from __future__ import annotations

import pytest

from common.ratelimit import WINDOW_S, RateLimiter
from tests.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def place(limiter: RateLimiter, client: str) -> bool:
    """What the handler does: ask, and record only an accepted call."""
    if limiter.retry_after(client):
        return False
    limiter.record(client)
    return True


def test_window_is_one_minute() -> None:
    assert WINDOW_S == 60.0


@pytest.mark.parametrize("per_minute", [1, 3, 10])
def test_n_calls_allowed_then_refused(clock: FakeClock, per_minute: int) -> None:
    limiter = RateLimiter(per_minute, clock)
    for _ in range(per_minute):
        assert limiter.retry_after("alice") == 0
        limiter.record("alice")
    assert limiter.retry_after("alice") == 60
    assert not place(limiter, "alice")


def test_retry_after_counts_down_to_the_oldest_call_leaving(clock: FakeClock) -> None:
    limiter = RateLimiter(3, clock)
    for gap in (0.0, 10.0, 10.0):  # calls at t, t+10, t+20
        clock.advance(gap)
        limiter.record("alice")
    clock.advance(10)  # t+30: the first call leaves the window at t+60
    assert limiter.retry_after("alice") == 30
    clock.advance(29.5)  # t+59.5: half a second left, rounded up
    assert limiter.retry_after("alice") == 1
    clock.advance(0.5)  # t+60: the first call has left
    assert limiter.retry_after("alice") == 0


def test_retry_after_rounds_up_to_whole_seconds(clock: FakeClock) -> None:
    limiter = RateLimiter(1, clock)
    limiter.record("alice")
    clock.advance(0.25)
    assert limiter.retry_after("alice") == 60  # 59.75 s -> 60
    clock.advance(59.7)
    assert limiter.retry_after("alice") == 1  # 0.05 s -> never 0 while refused


def test_window_slides(clock: FakeClock) -> None:
    limiter = RateLimiter(2, clock)
    assert place(limiter, "alice")  # t
    clock.advance(30)
    assert place(limiter, "alice")  # t+30
    assert not place(limiter, "alice")
    clock.advance(30)  # t+60: the first left, the second still counts
    assert place(limiter, "alice")
    assert not place(limiter, "alice")
    assert limiter.retry_after("alice") == 30  # the t+30 call leaves at t+90
    clock.advance(60)  # t+120: both remaining calls have left
    assert place(limiter, "alice")
    assert place(limiter, "alice")
    assert not place(limiter, "alice")


def test_refused_attempts_do_not_count(clock: FakeClock) -> None:
    limiter = RateLimiter(1, clock)
    assert place(limiter, "alice")
    for _ in range(5):
        clock.advance(10)
        assert not place(limiter, "alice")
    clock.advance(10)  # 60 s after the only accepted call
    assert place(limiter, "alice")


def test_clients_are_independent(clock: FakeClock) -> None:
    limiter = RateLimiter(2, clock)
    assert place(limiter, "alice")
    assert place(limiter, "alice")
    assert not place(limiter, "alice")
    assert limiter.retry_after("bob") == 0
    assert place(limiter, "bob")
    assert place(limiter, "bob")
    assert not place(limiter, "bob")
    clock.advance(60)
    assert place(limiter, "alice")
    assert place(limiter, "bob")


def test_forget_last_undoes_one_refused_call(clock: FakeClock) -> None:
    limiter = RateLimiter(2, clock)
    limiter.record("alice")  # t
    clock.advance(20)
    limiter.record("alice")  # t+20
    assert limiter.retry_after("alice") == 40
    limiter.forget_last("alice")  # the t+20 call was refused after all
    assert limiter.retry_after("alice") == 0
    limiter.record("alice")
    limiter.record("alice")
    assert not place(limiter, "alice")
    limiter.forget_last("alice")
    limiter.forget_last("alice")
    limiter.forget_last("alice")  # more undos than calls: nothing breaks
    assert place(limiter, "alice")


def test_forget_last_for_unknown_client_is_harmless(clock: FakeClock) -> None:
    limiter = RateLimiter(1, clock)
    limiter.forget_last("nobody")
    limiter.record("alice")
    limiter.forget_last("bob")
    assert limiter.retry_after("alice") == 60
    assert limiter.retry_after("bob") == 0


def test_per_minute_is_public(clock: FakeClock) -> None:
    # The handler quotes it in the 429 message.
    assert RateLimiter(7, clock).per_minute == 7


def test_default_clock_is_monotonic_and_works() -> None:
    limiter = RateLimiter(1)
    assert place(limiter, "alice")
    assert 59 <= limiter.retry_after("alice") <= 60


def test_idle_clients_are_forgotten(clock: FakeClock) -> None:
    limiter = RateLimiter(5, clock)
    for n in range(10_001):
        limiter.record(f"10.0.{n // 256}.{n % 256}")
    clock.advance(2 * WINDOW_S)  # every one of them is now idle
    limiter.record("newcomer")
    # The limiter's memory (its per-client table) should follow active clients only.
    assert len(limiter._hits) < 100
