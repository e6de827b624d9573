"""Health probes and metrics scrapes in the access log.

A load balancer's health check, Kubernetes' liveness and readiness probes and Prometheus'
scrapes come every few seconds, each an INFO access line: 17,000 lines a day per probe,
most of an idle server's log. Their successes are written at LOG_LEVEL=DEBUG only (as
LiveKit's webhooks are); a failure is written, once a minute per route and status."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web_log import AccessLogger

from handlers.keys import STORE
from tests.conftest import AppFactory

Client = TestClient[Any, Any]
PROBES = ("/healthz", "/readyz", "/metrics")


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]


async def probe_everything(client: Client) -> None:
    for path in PROBES:
        for _ in range(3):
            assert (await client.get(path)).status == 200, path
            assert (await client.head(path)).status == 200, path
    assert (await client.get("/calls")).status == 200  # an API request: logged
    await asyncio.sleep(0.05)  # a line is written once its answer has gone out


async def test_probes_that_succeed_are_logged_at_debug_only(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")  # before the first connection
    client = await start_app()
    await probe_everything(client)
    lines = access_lines(caplog)
    assert [line for line in lines if "/calls" in line], lines
    assert not [line for line in lines if any(path in line for path in PROBES)], lines

    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="aiohttp.access")
    await probe_everything(client)
    lines = access_lines(caplog)
    for path in PROBES:
        assert len([line for line in lines if f'"GET {path} ' in line]) == 3, (path, lines)
        assert len([line for line in lines if f'"HEAD {path} ' in line]) == 3, (path, lines)


async def test_a_failing_probe_is_logged_once_a_minute(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await start_app(readyz_reuse_s=0.0)
    await client.app[STORE].close()  # the database is gone: not ready
    for _ in range(5):
        assert (await client.get("/readyz")).status == 503
    await asyncio.sleep(0.05)
    lines = [line for line in access_lines(caplog) if "/readyz" in line]
    assert len(lines) == 1 and '" 503 ' in lines[0], lines


async def test_a_request_is_logged_at_its_utc_time_wherever_the_machine_is(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An access line's `%t` was the machine's local time (`[08/Dec/2026:13:52:00 +1345]` on
    Chatham Island for 00:07 UTC), beside the line's own UTC time."""
    monkeypatch.setenv("TZ", "Pacific/Chatham")
    monkeypatch.setattr(AccessLogger, "_cached_tz", None)  # aiohttp's offset, read again
    time.tzset()
    try:
        caplog.set_level(logging.INFO, logger="aiohttp.access")
        client = await start_app()
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        assert (await client.get("/calls")).status == 200
        await asyncio.sleep(0.05)  # a line is written once its answer has gone out
        after = dt.datetime.now(dt.UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    (line,) = [line for line in access_lines(caplog) if '"GET /calls ' in line]
    shown = re.search(r"\[([^]]+)\]", line)
    assert shown is not None and shown[1].endswith(" +0000"), line
    assert before <= dt.datetime.strptime(shown[1], "%d/%b/%Y:%H:%M:%S %z") <= after, line
