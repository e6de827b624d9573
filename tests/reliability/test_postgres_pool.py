"""PostgreSQL's connection slots, used up by the servers' pools together: a server waits for
one of its own connections instead of answering 503 while it holds idle ones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from common.storage import postgres as postgres_module
from common.storage.base import DatabaseError
from common.storage.postgres import PostgresCallStore
from common.storage.programs import Program, Query
from tests.pg_cluster import PostgresCluster

LIMIT = 3  # connections PostgreSQL lets the role have


def _as_role(dsn: str, role: str, database: str) -> str:
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{role}:pw@{host}", path=f"/{database}"))


@pytest.fixture
def limited_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A database owned by a role PostgreSQL gives LIMIT connections (as a max_connections
    the servers' pools add up past: the same refusal, SQLSTATE 53300)."""
    postgres_cluster.start()
    name = role = "pool_limited"
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE IF EXISTS {role}")
    postgres_cluster._admin(f"CREATE ROLE {role} LOGIN PASSWORD 'pw' CONNECTION LIMIT {LIMIT}")
    postgres_cluster._admin(f"CREATE DATABASE {name} OWNER {role}")
    yield _as_role(postgres_cluster.dsn(), role, name)
    postgres_cluster.drop_database(name)
    postgres_cluster._admin(f"DROP ROLE {role}")


async def test_a_pool_over_the_slots_left_waits_for_its_own_connections(
    limited_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await PostgresCallStore.open(limited_dsn, pool_size=LIMIT + 5)
    try:
        # More at once than PostgreSQL lets it connect, each holding its connection a while.
        results = await asyncio.gather(
            *(store._run(_sleeping_read(), write=False) for _ in range(4 * LIMIT)),
            return_exceptions=True,
        )
        assert results == [1] * (4 * LIMIT), results
        # Past POOL_WAIT_S, the refusal is the answer (503), as before.
        monkeypatch.setattr(postgres_module, "POOL_WAIT_S", 0.0)
        results = await asyncio.gather(
            *(store._run(_sleeping_read(), write=False) for _ in range(4 * LIMIT)),
            return_exceptions=True,
        )
        assert any(isinstance(r, DatabaseError) for r in results)
    finally:
        await store.close()


def _sleeping_read() -> Program[int]:
    rows = yield Query("SELECT 1 AS one FROM pg_sleep(0.05)")
    return int(rows[0]["one"])
