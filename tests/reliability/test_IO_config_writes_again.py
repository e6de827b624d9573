"""config.json's disk refusing writes, then taking them again (a full disk freed, a directory
made immutable and given back): the log said `✗ Configuration update failed …` once a minute
and nothing once writes were taken again (only /readyz's `ready again`, when something probes
it), nor how many writes had failed after the first line (held back, said only with a failure
a minute or more later). Now one line says config.json takes writes again, for how long it
did not, and how many failures were held back."""

from __future__ import annotations

import errno
import logging
import re

import pytest

from tests.conftest import AppFactory
from tests.helpers import held_back_at_stop
from tests.reliability.test_disk_faults import DiskFault, _place

SAID = "takes writes again"


async def test_config_json_taking_writes_again_is_said_once(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="common.config_store.store")
    fault = DiskFault("write", errno.ENOSPC)
    fault.install(monkeypatch)
    fault.active = False  # the server starts only on a config.json that takes a write
    client = await start_app(sandbox_time_scale=100.0)
    fault.active = True
    for n in range(4):  # one after another: calls placed at once share one write
        assert (await _place(client, name=f"R{n}")).status == 503
    assert not [r for r in caplog.records if SAID in r.getMessage()]
    fault.active = False
    for n in range(2):
        assert (await _place(client, name=f"A{n}")).status == 200
    said = [r for r in caplog.records if SAID in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    line = said[0].getMessage()
    assert re.search(r"config\.json takes writes again \(refused for \d+ s; 3 more", line), line


async def test_failed_writes_held_back_when_the_server_stops_are_said(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk still full as the server stops: the first refused write said, the others
    held back within its minute and never counted (only a write taken after them said them)."""
    caplog.set_level(logging.INFO, logger="common.config_store.store")
    fault = DiskFault("write", errno.ENOSPC)
    fault.install(monkeypatch)
    fault.active = False
    client = await start_app(sandbox_time_scale=100.0)
    fault.active = True
    for n in range(4):
        assert (await _place(client, name=f"R{n}")).status == 503
    await client.close()  # the server stops
    line = held_back_at_stop(caplog)
    assert re.search(r"^config\.json: [3-9] more failure\(s\) like 'write 28'", line), line
