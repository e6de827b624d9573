"""/readyz on a PostgreSQL that does not answer (its processes SIGSTOPped, as a frozen host or
a network cut leaves it): it answered after 17 s, not within the probes' 2 s bound README
promises, since the cancelled write waited for asyncpg to give up its rollback and its
connection; every probe sharing that check waited as long, past a load balancer's timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers import health
from tests.conftest import AppFactory
from tests.pg_cluster import PostgresCluster


async def _ready(client: TestClient[Any, Any]) -> tuple[int, list[str], float]:
    started = time.monotonic()
    resp = await asyncio.wait_for(client.get("/readyz"), 60.0)
    doc = await resp.json()
    components = [d["component"] for d in doc.get("details", [])]
    return resp.status, components, time.monotonic() - started


async def test_readyz_answers_within_its_bound_while_postgresql_is_frozen(
    postgres_dsn: str, start_app: AppFactory, postgres_cluster: PostgresCluster
) -> None:
    client = await start_app(database_url=postgres_dsn, readyz_reuse_s=0.0)
    assert (await _ready(client))[:2] == (200, [])
    with postgres_cluster.frozen():
        for _ in range(2):  # and the next check too, while the first one's write still hangs
            status, components, took = await _ready(client)
            assert (status, components) == (503, ["database"])
            assert took < health.PROBE_TIMEOUT_S + 1.5, f"/readyz took {took:.1f} s"
    deadline = time.monotonic() + 30.0
    while (await _ready(client))[0] != 200:  # and ready again, by itself, once it answers
        assert time.monotonic() < deadline, "not ready again after PostgreSQL came back"
        await asyncio.sleep(0.5)


async def test_a_frozen_postgresql_is_said_not_to_answer_naming_its_host(
    postgres_dsn: str,
    start_app: AppFactory,
    postgres_cluster: PostgresCluster,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was said in SQLite's words: "the database is locked by another process,
    overloaded, or its disk stalls". The log names its host and port (not its password);
    /readyz, which needs no token, names neither."""
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.5)  # frozen: no bound is long enough
    client = await start_app(database_url=postgres_dsn, readyz_reuse_s=0.0)
    caplog.set_level(logging.WARNING, logger="handlers.health")
    with postgres_cluster.frozen():
        resp = await asyncio.wait_for(client.get("/readyz"), 60.0)
        answered = (await resp.json())["details"][0]["error"]
    where = f"{postgres_cluster.host}:{postgres_cluster.port}"
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not ready")]
    assert len(said) == 1, said
    for text, named in ((said[0], where), (answered, "DATABASE_URL's host")):
        assert f"PostgreSQL at {named} is not answering" in text, text
        assert "locked by another process" not in text
        assert postgres_cluster.password not in text
    assert where not in answered
