"""A placement cancelled during its config write leaves nothing of that write behind.

aiohttp cancels a request's handler when its client goes away (with handler_cancellation,
as its test server and `web.run_app(handler_cancellation=True)` run it) and when the
server's stop outlasts its shutdown timeout; the call is then never placed, as a refused
one is not, and its config write is taken back as a refused call's is.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from handlers.keys import CONFIG, METRICS
from server import SANDBOX
from tests.helpers import SEED_EXAMPLES, hold_config_write

Client = TestClient[Any, Any]


def config_of(client: Client) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(client.app[CONFIG].path).read_bytes())
    return doc


def names_in(doc: dict[str, Any]) -> list[str]:
    return [record["caller_name"] for record in doc["calls"].values()]


def dialled(client: Client) -> list[dict[str, Any]]:
    return [
        r.body
        for r in client.app[SANDBOX].requests
        if r.method == "CreateSIPParticipant" and r.authorized
    ]


def serving(client: Client) -> list[asyncio.Task[None]]:
    """The tasks serving the test server's connections now (one request each here)."""
    connections = client.server.runner.server.connections  # type: ignore[union-attr]
    return [c._task_handler for c in connections if c._task_handler is not None]


async def gone_away(
    client: Client, request: asyncio.Future[Any], handler: asyncio.Task[None]
) -> None:
    """The client gives up its request; its handler on the server is cancelled and ends."""
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(asyncio.wait({handler}), 10)


async def test_a_placement_cancelled_while_its_config_write_runs_takes_the_write_back(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its record stayed in config.json until the reaper's pass (a minute), and the seed's
    flat document (load_dynamic_config()["caller_name"]) named a call never placed until
    the next call. Now both are taken back once the write under way has landed."""
    before = await client.app[CONFIG].load_async()  # the seed's load_dynamic_config()
    writes = hold_config_write(monkeypatch, b"Cancelled")
    request = asyncio.ensure_future(
        client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Cancelled"))
    )
    assert await asyncio.to_thread(writes.held.wait, 10)
    (handler,) = serving(client)
    await gone_away(client, request, handler)
    writes.go.set()
    await client.app[CONFIG].flush_async()  # the write under way, and what follows it
    after = config_of(client)
    assert "Cancelled" not in names_in(after)
    assert after["caller_name"] == before["caller_name"] != "Cancelled"
    assert (await client.app[CONFIG].load_async())["caller_name"] == before["caller_name"]
    assert dialled(client) == []
    placed = await client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="After"))
    assert placed.status == 200
    assert config_of(client)["caller_name"] == "After"


async def test_a_placement_cancelled_while_its_config_write_waits_is_never_written(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's config write queued behind the one under way (group commit) was written
    after its placement had been cancelled: config.json kept a record, and a flat document,
    of a call never placed. Now it is dropped from the queue; the call ahead is placed."""
    writes = hold_config_write(monkeypatch, b"Ahead")
    ahead = asyncio.ensure_future(
        client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Ahead"))
    )
    assert await asyncio.to_thread(writes.held.wait, 10)
    (ahead_handler,) = serving(client)
    queued = asyncio.ensure_future(
        client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Queued"))
    )
    store = client.app[CONFIG]

    async def in_queue() -> None:
        while not any(batch.pending for batch in store._batches.values()):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(in_queue(), 10)
    (queued_handler,) = [t for t in serving(client) if t is not ahead_handler]
    await gone_away(client, queued, queued_handler)
    writes.go.set()
    assert (await asyncio.wait_for(ahead, 10)).status == 200
    await store.flush_async()
    after = config_of(client)
    assert "Queued" not in names_in(after) and "Ahead" in names_in(after)
    assert after["caller_name"] == "Ahead"
    assert len(dialled(client)) == 1


async def test_a_placement_cancelled_while_its_row_is_written_takes_its_config_write_back(
    client: Client, tmp_path: Path
) -> None:
    """Cancelled after its config write, while the calls database wrote its row (here held
    up by another connection's write lock): the call is never dialled (a row that lands is
    settled failed by the reaper), yet its record stayed in config.json and the flat
    document named it until the next call. Now its config write is taken back."""
    before = await client.app[CONFIG].load_async()
    database = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    try:
        database.execute("BEGIN IMMEDIATE")  # the writers' lock, as another process holds it
        request = asyncio.ensure_future(
            client.post("/calls/outbound", json=dict(SEED_EXAMPLES[0], name="Cancelled"))
        )

        async def row_under_way() -> None:  # its config write done (measured), its row next
            registry = client.app[METRICS].registry
            while not registry.get_sample_value("config_write_seconds_count"):
                await asyncio.sleep(0.02)

        await asyncio.wait_for(row_under_way(), 10)
        (handler,) = serving(client)
        assert "Cancelled" in names_in(config_of(client))
        await gone_away(client, request, handler)
    finally:
        database.execute("ROLLBACK")
        database.close()
    await client.app[CONFIG].flush_async()
    after = config_of(client)
    assert "Cancelled" not in names_in(after)
    assert after["caller_name"] == before["caller_name"] != "Cancelled"
    assert dialled(client) == []
