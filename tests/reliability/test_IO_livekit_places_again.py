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
