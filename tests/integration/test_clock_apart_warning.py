"""A server whose clock is apart from PostgreSQL's says so at start-up: servers on one
database judge the times each other wrote by their own clocks, and one 14 h ahead of another
took its campaign over and placed a busy number's retry at once (CI, stop 42, two servers in
one test). The warning had no test."""

from __future__ import annotations

import logging
import time

import pytest

from common.storage.postgres import CLOCK_APART_S, PostgresCallStore


@pytest.mark.parametrize("apart_s", [-3600.0, 120.0, 0.0])
async def test_a_clock_apart_from_postgresqls_is_warned_of_at_start_up(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture, apart_s: float
) -> None:
    caplog.set_level(logging.WARNING, logger="common.storage.postgres")
    store = await PostgresCallStore.open(postgres_dsn, clock=lambda: time.time() + apart_s)
    await store.close()
    said = [r.getMessage() for r in caplog.records if "PostgreSQL's" in r.getMessage()]
    if abs(apart_s) <= CLOCK_APART_S:
        assert said == []
        return
    (line,) = said
    side = "ahead of" if apart_s > 0 else "behind"
    assert f"clock is {abs(apart_s):.1f} s {side} PostgreSQL's" in line
    assert "takes every campaign over" in line and "NTP" in line
