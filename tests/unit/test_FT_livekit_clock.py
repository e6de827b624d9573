"""LiveKitClock: how far LiveKit's clock is behind this server's, from when it signed its
webhooks (tests/integration/test_FT_livekit_clock_behind.py shows why it matters)."""

from __future__ import annotations

import logging

import pytest

from common.livekit import skew
from common.livekit.skew import SPAN_S, WINDOW_S, LiveKitClock
from tests.helpers import FakeClock

NOW = 1_800_000_000.0


def clock_hearing(mono: FakeClock, lags: list[float], every_s: float = 1.0) -> LiveKitClock:
    clock = LiveKitClock(monotonic=mono)
    for lag in lags:
        clock.heard(NOW - lag, NOW)
        mono.advance(every_s)
    return clock


def test_a_clock_behind_is_read_from_webhooks_that_kept_coming_a_minute() -> None:
    mono = FakeClock(100.0)
    clock = clock_hearing(mono, [120.6, 121.0, 120.2])
    assert clock.behind() == 0  # a few seconds of webhooks: not known yet
    assert clock.on_our_clock(NOW - 120) == NOW - 120
    mono.advance(SPAN_S)
    assert clock.behind() == 120
    assert clock.on_our_clock(NOW - 120) == NOW
    assert clock.on_our_clock(None) is None


def test_webhooks_retried_after_an_outage_are_no_measure_of_the_clocks() -> None:
    """Just after this server came back, LiveKit's retries arrive with their first signatures,
    up to ~15 s old: they are late, and read so; the prompt ones after them say the clocks
    agree."""
    mono = FakeClock(100.0)
    clock = clock_hearing(mono, [18.0, 14.5, 9.0, 4.2], every_s=0.1)
    assert clock.behind() == 0
    mono.advance(SPAN_S)
    clock.heard(NOW + SPAN_S - 0.3, NOW + SPAN_S)  # this server's clock went on as well
    assert clock.behind() == 0
    assert clock.on_our_clock(NOW - 30) == NOW - 30


def test_clocks_within_the_tolerance_agree_and_a_clock_ahead_is_read_too() -> None:
    mono = FakeClock(100.0)
    assert clock_hearing(mono, [1.9] * 70).behind() == 0
    assert clock_hearing(FakeClock(0.0), [-30.0] * 70).behind() == -30


def test_a_step_of_this_servers_clock_is_followed(caplog: pytest.LogCaptureFixture) -> None:
    mono = FakeClock(100.0)
    with caplog.at_level(logging.INFO, logger="common.livekit.skew"):
        clock = clock_hearing(mono, [120.0] * 70)
        assert clock.behind() == 120
        clock.heard(NOW - 0.5, NOW)  # this server's clock stepped back 2 minutes: at once
        assert clock.behind() == 0
        mono.advance(WINDOW_S + 1)  # none for 5 minutes: the next ones start anew
        clock.heard(NOW - 300, NOW)
        assert clock.behind() == 0
    assert [r.getMessage()[:37] for r in caplog.records] == [
        "LiveKit's clock is 120 s behind this ",
        "LiveKit's clock agrees with this serv",
    ]


def test_a_token_with_no_signing_time_says_nothing() -> None:
    mono = FakeClock(100.0)
    clock = LiveKitClock(monotonic=mono)
    clock.heard(None, NOW)
    mono.advance(SPAN_S + 1)
    assert clock.behind() == 0


def test_each_signer_has_a_clock_of_its_own_and_so_many_at_most() -> None:
    clocks = skew.SignerClocks()
    first = clocks.of("host-a")
    assert clocks.of("host-a") is first and clocks.of("host-b") is not first
    assert clocks.of(None) is clocks.of(None)  # tokens naming no signer share one
    for n in range(skew.MAX_SIGNERS):
        clocks.of(f"host-{n}")
    assert clocks.of("host-a") is not first  # the one heard from least recently went
    assert len(clocks._clocks) == skew.MAX_SIGNERS
