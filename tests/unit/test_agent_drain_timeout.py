"""A stopping worker waits for its live calls as long as a call may last.

livekit-agents waits an hour (its drain timeout) for a draining worker's jobs, then stops
them: with CALL_MAX_DURATION_S above 3,600 s (it may be up to 86,400), a deploy cut longer
calls mid-sentence (GX's finding)."""

from __future__ import annotations

from agent.worker import build_server
from common.settings import Settings


def test_the_drain_waits_an_hour_by_default() -> None:
    assert build_server(Settings())._drain_timeout == 3600


def test_the_drain_waits_as_long_as_the_longest_call() -> None:
    assert build_server(Settings(call_max_duration_s=7200))._drain_timeout == 7200
    assert build_server(Settings(call_max_duration_s=600))._drain_timeout == 3600
