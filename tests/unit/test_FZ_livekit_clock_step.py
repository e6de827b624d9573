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
