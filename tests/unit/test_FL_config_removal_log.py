"""A finished call's config record that cannot be removed (config.json's directory made
read-only or immutable, a full disk) is said once a minute, not once a call: each end of a
call logged its own ERROR 'could not remove finished calls' config records' (seen on the real
server.py: three in two seconds as six calls ended; a campaign's fifty live calls, fifty), for
one fault the readiness line already names."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from common.config_store.store import ConfigStore
from tests.helpers import immutable

LINE = "could not remove finished calls' config records"


async def test_failed_removals_are_said_once_a_minute_with_a_count(
    store: ConfigStore, config_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    call_ids = [f"call-{n:012x}" for n in range(6)]
    for call_id in call_ids:
        await store.update_async("Someone", call_id=call_id)
    with immutable(config_path.parent), caplog.at_level(logging.ERROR):
        for call_id in call_ids[:5]:  # calls ending one after another, each its own write
            store.forget_call_soon(call_id, within_s=0.01)
            await asyncio.sleep(0.1)
    said = [r.getMessage() for r in caplog.records if LINE in r.getMessage()]
    assert len(said) == 1, said
    store._failures.clock = lambda: time.monotonic() + 120.0  # a minute on: said again
    caplog.clear()
    with immutable(config_path.parent), caplog.at_level(logging.ERROR):
        store.forget_call_soon(call_ids[5], within_s=0.01)
        await asyncio.sleep(0.1)
    said = [r.getMessage() for r in caplog.records if LINE in r.getMessage()]
    assert len(said) == 1 and "more like it" in said[0], said
