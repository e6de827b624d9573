"""The retention's erasure of conversations is the reaper's; config.json is another file on
another disk, perhaps. A config.json that cannot be written (its disk full) must not keep
the reaper from erasing what CALL_DATA_RETENTION_DAYS says is to go."""

from __future__ import annotations

import errno
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common import update_config
from handlers.keys import CALLS, EVENTS
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES

Client = TestClient[Any, Any]


async def test_a_config_json_that_cannot_be_written_does_not_stop_the_retention(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a config.json record to prune (an ended call's, left by a crash or a script) and
    config.json's disk full, every reaper pass stopped at the prune, before the retention:
    the transcript of a call past CALL_DATA_RETENTION_DAYS was kept for as long as the disk
    stayed full (and events a dead server left were not taken over)."""
    client = await start_app(sandbox_time_scale=0.05, call_data_retention_days=1.0)
    resp = await client.post("/calls/outbound", json=SEED_EXAMPLES[2])
    call_id = (await resp.json())["call_id"]
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    assert (await (await client.get(f"/calls/{call_id}")).json())["transcript"]
    update_config.update_config("Emma Watson", call_id=call_id)  # a record left behind
    service = client.app[CALLS]

    def disk_full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(service.config, "_mutate_sync", disk_full)
    real_clock = service.clock
    service.clock = lambda: real_clock() + 86400 + 1

    with caplog.at_level(logging.ERROR):
        await service.reap_logged()

    call = await (await client.get(f"/calls/{call_id}")).json()
    assert call["transcript"] == [] and call["personal_data_erased_at"] is not None
    assert "config.json" in caplog.text  # the failure is said, naming the file
