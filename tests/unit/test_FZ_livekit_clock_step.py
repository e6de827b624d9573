"""LiveKitClock after this server's clock stepped forward: the lags heard before the step were
that much short, and their least (kept 5 minutes) dated every event of a LiveKit now in sync
that far early (a VM paused 10 s, its clock set right: hang-ups 10 s early, talk_s 10 s
short). The kept lags follow the step at once, as a step back already was followed."""

from __future__ import annotations

from common.livekit.skew import SPAN_S, LiveKitClock
from tests.helpers import FakeClock

NOW = 1_800_000_000.0


def test_a_step_forward_of_this_servers_clock_is_followed_at_once() -> None:
    mono = FakeClock(100.0)
    clock = LiveKitClock(monotonic=mono)
    t = NOW  # the true time: LiveKit's clock; this server's is 10 s behind
    for _ in range(int(SPAN_S) + 10):
        clock.heard(t, t - 10.0 + 0.2)  # signed by LiveKit, heard 0.2 s later
        mono.advance(1.0)
        t += 1.0
    assert clock.behind() == -10
    # NTP steps this server's clock 10 s forward: both clocks agree now
    clock.heard(t, t + 0.2)
    assert clock.behind() == 0
    assert clock.on_our_clock(t - 3.0) == t - 3.0


def test_a_step_back_of_both_clocks_is_no_distance() -> None:
    """LiveKit on this server's host (the embedded sandbox, `livekit-server --dev`) steps back
    with it. Moved back by the step, the lags kept from before (0) read LiveKit as 600 s ahead
    for the 5-minute window: each of its events dated 10 minutes early (a busy line's
    room_started before its call was created, ring_s 0) and a WARNING blaming LiveKit's clock.
    A step back needs no moving: a LiveKit that did not step shows it at its next webhook,
    whose lag is then the least."""
    mono = FakeClock(100.0)
    clock = LiveKitClock(monotonic=mono)
    t = NOW
    for _ in range(int(SPAN_S) + 10):
        clock.heard(t, t + 0.2)
        mono.advance(1.0)
        t += 1.0
    assert clock.behind() == 0
    t -= 600.0  # NTP steps the host's clock back 10 minutes: both clocks read it
    clock.heard(t, t + 0.2)
    assert clock.behind() == 0
    assert clock.on_our_clock(t) == t
    # A LiveKit elsewhere, in time: this server's clock stepped back alone, LiveKit is ahead
    other = LiveKitClock(monotonic=mono)
    for _ in range(int(SPAN_S) + 10):
        other.heard(t, t + 0.2)
        mono.advance(1.0)
        t += 1.0
    other.heard(t, t - 600.0 + 0.2)
    assert other.behind() == -600
