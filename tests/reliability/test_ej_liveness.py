"""/healthz as a platform's liveness probe: it fails only when a restart is what helps.

Regression: calls.db removed or replaced under the running server left it refusing every
write for good ("restart the server", /readyz 503) while /healthz answered 200: Kubernetes,
restarting on liveness, kept the server up and out of service until someone came.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES

Client = TestClient[Any, Any]


async def test_a_database_replaced_under_the_server_fails_liveness(
    start_app: AppFactory, tmp_path: Path
) -> None:
    client = await start_app()
    assert (await client.get("/healthz")).status == 200
    database = tmp_path / "calls.db"
    shutil.copyfile(database, tmp_path / "copy.db")
    (tmp_path / "copy.db").replace(database)  # a backup restored under the running server
    placed = await client.post("/calls/outbound", json=SEED_EXAMPLES[0])
    assert placed.status == 503  # "restart the server"
    resp = await client.get("/healthz")
    body = await resp.json()
    assert resp.status == 503, body
    assert "restarted" in body["error"] and str(tmp_path) not in body["error"]
    assert (await client.head("/healthz")).status == 503


async def test_a_database_refusing_writes_for_a_while_does_not_fail_liveness(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """A dependency's failure (the database locked by another process) is readiness's to
    say: a restart would not end it, and a liveness failing on it restarts in a loop."""
    client = await start_app(readyz_reuse_s=0.0)
    holder = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        ready = (await client.get("/readyz")).status
        alive = (await client.get("/healthz")).status
    finally:
        holder.rollback()
        holder.close()
    assert (ready, alive) == (503, 200)
