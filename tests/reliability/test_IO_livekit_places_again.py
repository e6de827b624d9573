"""LiveKit down under a running server, then back: the log said `call … could not be placed:
agent dispatch: LiveKit unreachable` once a minute, and nothing once calls were placed again
(only /readyz's `ready again`, when something probes it), nor how many calls had failed
after the first line (held back, said only with a failure a minute or more later). Now one
line says LiveKit places calls again, for how long it did not, and how many were held back."""

from __future__ import annotations

import logging
import re

import pytest

from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import held_back_at_stop
from tests.reliability.test_livekit_faults import CALL, _refused

SAID = "LiveKit places calls again"


async def test_livekit_placing_again_after_failures_is_said_once(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app()
    fault = TwirpError("unavailable", "LiveKit is restarting")
    client.app[SANDBOX].inject("CreateDispatch", error=fault, times=3)
    for _ in range(3):
        await _refused(client, 503)
    assert not [r for r in caplog.records if SAID in r.getMessage()]
    for _ in range(2):
        assert (await client.post("/calls/outbound", json=CALL)).status == 200
    said = [r for r in caplog.records if SAID in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    line = said[0].getMessage()
    assert re.search(r"after \d+ s of failed placements; 2 more failure\(s\) held back", line), line


async def test_a_livekit_failing_one_placement_in_two_is_said_once_a_minute(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Every other placement refused (LiveKit flapping, a node of several down): each success
    ended the outage and forgot its kind, so each failure was an ERROR at once and each
    success a WARNING, two lines a call, where a failure is said once a minute."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app()
    fault = TwirpError("unavailable", "LiveKit is restarting")
    for _ in range(4):
        client.app[SANDBOX].inject("CreateDispatch", error=fault, times=1)
        await _refused(client, 503)
        assert (await client.post("/calls/outbound", json=CALL)).status == 200
    lines = [r.getMessage() for r in caplog.records]
    failed = [line for line in lines if "could not be placed" in line]
    again = [line for line in lines if SAID in line]
    # The first failure, the first placement after it, then the next failure (said at once,
    # as the next outage is); the rest held back within the minute.
    assert len(failed) == 2 and len(again) == 1, failed + again


async def test_failures_held_back_when_the_server_stops_are_said(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """LiveKit down until the server stops: the first refused placement said, the next two
    held back within its minute and never counted (only a placement after them said them)."""
    caplog.set_level(logging.INFO, logger="common.calls.service")
    client = await start_app()
    fault = TwirpError("unavailable", "LiveKit is restarting")
    client.app[SANDBOX].inject("CreateDispatch", error=fault, times=3)
    for _ in range(3):
        await _refused(client, 503)
    await client.close()  # the server stops
    line = held_back_at_stop(caplog)
    assert re.search(r"2 more failure\(s\) like 'placement [^']+' in the last \d+ s", line), line
