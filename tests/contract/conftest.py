"""The storage contract suite: every test here runs against each CallStore backend.

`store` is a fresh, empty store on a FakeClock; `reopen()` opens the same database again (as
a restart would) and `new_store()` opens a second store on it (as a second server would).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.storage.base import CallStore
from common.storage.postgres import PostgresCallStore
from common.storage.sqlite import SqliteCallStore
from tests.helpers import FakeClock

BACKENDS = ["sqlite", "postgres"]


@dataclass
class Backend:
    name: str
    open: Callable[[], Awaitable[CallStore]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")  # a fresh database per test

        async def open_postgres() -> CallStore:
            return await PostgresCallStore.open(dsn, clock=clock, pool_size=10)

        yield Backend("postgres", open_postgres)
        return
    path = tmp_path / "data" / "calls.db"

    async def open_sqlite() -> CallStore:
        return await SqliteCallStore.open(path, clock)

    yield Backend(request.param, open_sqlite)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[CallStore]:
    opened = await backend.open()
    yield opened
    await opened.close()
