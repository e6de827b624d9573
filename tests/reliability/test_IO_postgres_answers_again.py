"""PostgreSQL stopped and started again under a running server: the log said `calls database
unreachable: …` once, and nothing when it answered again (SQLite's store says `… answers
again`): an operator reading the log could not tell a database still down from one back 30 s
later, nor how many requests failed meanwhile (the failures after the first are held back,
and the count was said only with the next failure, a minute or more later). Now one line says
it answers again, for how long it did not, and how many failures were held back."""

from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import AppFactory
from tests.helpers import held_back_at_stop
from tests.pg_cluster import PostgresCluster

SAID = "calls database answers again"


async def test_postgresql_back_after_an_outage_is_said_once(
    postgres_dsn: str,
    start_app: AppFactory,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="common.storage.postgres")
    client = await start_app(database_url=postgres_dsn)
    assert (await client.get("/calls")).status == 200
    postgres_cluster.stop()
    try:
        for _ in range(3):
            assert (await client.get("/calls")).status == 503
    finally:
        postgres_cluster.start()
    assert not [r for r in caplog.records if SAID in r.getMessage()]
    for _ in range(2):
        assert (await client.get("/calls")).status == 200
    said = [r for r in caplog.records if SAID in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].levelno == logging.WARNING
    line = said[0].getMessage()
    held = r"\(unreachable for \d+ s; [1-9]\d* more failure\(s\) like it held back"
    assert re.search(held, line), line


async def test_failures_held_back_when_the_server_stops_are_said(
    postgres_dsn: str,
    start_app: AppFactory,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL still down as the server stops: the first failure said, the others held
    back within its minute and never counted (only an answer after them said them)."""
    caplog.set_level(logging.INFO, logger="common.storage.postgres")
    client = await start_app(database_url=postgres_dsn)
    assert (await client.get("/calls")).status == 200
    postgres_cluster.stop()
    try:
        for _ in range(3):
            assert (await client.get("/calls")).status == 503
        await client.close()  # the server stops
    finally:
        postgres_cluster.start()
    line = held_back_at_stop(caplog)
    assert re.search(r"^calls database: [2-9]\d* more failure\(s\) like 'unreachable'", line), line
