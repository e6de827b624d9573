"""/readyz tells the truth: when every call would get 503 (a full disk under the database or
under config.json, a file system remounted read-only), readiness says so and names the part.

Regression: /readyz answered 200 in all of these, since it only read from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from common.storage.base import DatabaseError
from handlers import health
from handlers.keys import STORE
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, immutable
from tests.reliability.conftest import Figures
from tests.reliability.test_disk_faults import _fill, _tmpfs

Client = TestClient[Any, Any]


async def _readiness(client: Client) -> tuple[int, list[str]]:
    resp = await client.get("/readyz")
    doc = await resp.json()
    return resp.status, [d["component"] for d in doc.get("details", [])]


async def _call_status(client: Client) -> int:
    return (await client.post("/calls/outbound", json=SEED_EXAMPLES[0])).status


async def test_a_full_disk_under_the_database_is_not_ready(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    with _tmpfs(tmp_path / "mnt", "1m") as mount:
        client = await start_app(calls_db_path=mount / "calls.db")
        assert await _readiness(client) == (200, [])
        filler = _fill(mount)
        not_ready = await _readiness(client)
        refused = await _call_status(client)
        filler.unlink()
        again = await _readiness(client)
    assert not_ready == (503, ["database"])
    assert refused == 503  # what readiness now predicts
    assert again == (200, [])
    figures.add(f"full disk under calls.db: /readyz {not_ready}, a call {refused}; freed: {again}")


async def test_a_full_disk_under_config_json_is_not_ready(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    with _tmpfs(tmp_path / "mnt", "512k") as mount:
        client = await start_app(config_path=mount / "config.json")
        assert await _readiness(client) == (200, [])
        filler = _fill(mount)
        not_ready = await _readiness(client)
        refused = await _call_status(client)
        filler.unlink()
        again = await _readiness(client)
    assert not_ready == (503, ["config"])
    assert refused == 503
    assert again == (200, [])
    figures.add(f"full disk under config.json: /readyz {not_ready}, a call {refused}")


async def test_config_json_on_a_read_only_file_system_is_not_ready(
    start_app: AppFactory, tmp_path: Path, figures: Figures
) -> None:
    with _tmpfs(tmp_path / "mnt", "4m") as mount:
        client = await start_app(config_path=mount / "config.json")
        assert await _call_status(client) == 200
        assert await _readiness(client) == (200, [])
        _mount(mount, "remount,ro")  # config.json keeps no file open: the remount goes through
        try:
            not_ready = await _readiness(client)
            said = await (await client.get("/readyz")).json()  # the verdict given again
            refused = await _call_status(client)
        finally:
            _mount(mount, "remount,rw")
        again = await _readiness(client)
    assert not_ready == (503, ["config"])
    # What is wrong, without the server's paths (any web page can read /readyz)
    assert said["details"][0]["error"] == "config.json's directory: Read-only file system"
    assert refused == 503
    assert again == (200, [])
    figures.add(
        f"config.json's file system remounted read-only: /readyz {not_ready}, a call {refused}"
    )


@contextlib.contextmanager
def _unreplaceable(path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """config.json that cannot be replaced while its directory takes files: made immutable
    (`chattr +i`, where this machine allows it), or a rename onto it refused as the kernel
    refuses one onto an immutable file (EPERM)."""
    if how == "chattr +i":
        with immutable(path):
            yield
        return
    real_replace = os.replace

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(dst) == str(path):
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), os.fspath(src))
        real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", replace)
        yield


@pytest.mark.parametrize("how", ["chattr +i", "rename refused"])
async def test_a_config_json_that_cannot_be_replaced_is_not_ready(
    start_app: AppFactory,
    tmp_path: Path,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    figures: Figures,
) -> None:
    """Its directory takes the probe's file, but no call's write can replace config.json:
    every call was 503 while /readyz said ready, and a load balancer kept sending calls. Now
    the failed write makes /readyz 503 naming config, until a write succeeds: the probe's own
    write of config.json once it can be replaced again (no call needed: none comes to a
    server that is not ready)."""
    path = tmp_path / "config.json"
    client = await start_app(config_path=path)
    assert await _call_status(client) == 200
    assert await _readiness(client) == (200, [])
    with _unreplaceable(path, how, monkeypatch):
        refused = await _call_status(client)
        not_ready = await _readiness(client)
        said = await (await client.get("/readyz")).json()
    again = await _readiness(client)
    assert refused == 503
    assert not_ready == (503, ["config"])
    error = said["details"][0]["error"]
    assert error == "config.json: a write of it fails: Operation not permitted"
    assert again == (200, [])
    assert await _call_status(client) == 200
    figures.add(f"config.json not replaceable ({how}): a call {refused}, /readyz {not_ready}")


def _mount(where: Path, options: str) -> None:
    subprocess.run(
        ["mount", "-o", options, str(where)], check=True, capture_output=True, timeout=10
    )


async def test_a_flood_of_probes_shares_checks(start_app: AppFactory) -> None:
    """/readyz needs no token, and each check writes to the database, syncs a file and asks
    LiveKit: concurrent probes share one check, and a verdict is given again for
    READYZ_REUSE_S (a flood made a database write and a LiveKit request per request)."""
    client = await start_app(readyz_reuse_s=60.0)
    store = client.app[STORE]
    writes = 0
    probe = store.probe_write

    async def counted(*args: Any) -> None:
        nonlocal writes
        writes += 1
        await asyncio.sleep(0.1)  # the check is still running when the others come
        await probe(*args)

    store.probe_write = counted
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(50)))
    assert [a.status for a in answers] == [200] * 50
    assert writes == 1
    assert (await client.get("/readyz")).status == 200 and writes == 1  # reused


async def test_a_probe_that_goes_away_does_not_cancel_the_shared_check(
    start_app: AppFactory,
) -> None:
    client = await start_app(readyz_reuse_s=0.0)
    store = client.app[STORE]
    probe = store.probe_write
    started = asyncio.Event()

    async def slow(*args: Any) -> None:
        started.set()
        await asyncio.sleep(0.2)
        await probe(*args)

    store.probe_write = slow
    first = asyncio.ensure_future(client.get("/readyz"))
    await started.wait()
    second = asyncio.ensure_future(client.get("/readyz"))  # shares the running check
    await asyncio.sleep(0.05)
    first.cancel()  # its connection closes: its handler is cancelled
    assert (await second).status == 200


async def test_metrics_count_the_calls_table_once_for_concurrent_scrapes_and_reuse_it(
    start_app: AppFactory,
) -> None:
    """Each /metrics (no token) read the whole calls table: 20 clients scraping it with
    1,000,000 calls made placing a call take 3.2 s."""
    client = await start_app(metrics_reuse_s=60.0)
    store = client.app[STORE]
    counts = 0
    count_by_status = store.count_by_status

    async def counted() -> dict[str, int]:
        nonlocal counts
        counts += 1
        await asyncio.sleep(0.1)  # still counting when the others come
        counted_now: dict[str, int] = await count_by_status()
        return counted_now

    store.count_by_status = counted
    answers = await asyncio.gather(*(client.get("/metrics") for _ in range(20)))
    assert [a.status for a in answers] == [200] * 20 and counts == 1
    text = await (await client.get("/metrics")).text()
    assert counts == 1  # reused
    # Every status, 0 for those without a call (a live-calls panel said "no data").
    assert 'calls{status="in_progress"} 0.0' in text and 'calls{status="canceled"} 0.0' in text
    assert "customer_webhook_deliveries_pending 0.0" in text
    assert "calls_database_read 1.0" in text


async def test_metrics_say_when_the_database_did_not_answer(start_app: AppFactory) -> None:
    client = await start_app(metrics_reuse_s=0.0)
    assert (await client.get("/calls/outbound")).status == 405  # something in the log
    first = await (await client.get("/metrics")).text()
    assert 'calls{status="dialing"} 0.0' in first
    store = client.app[STORE]

    async def down() -> dict[str, int]:
        raise DatabaseError("database unreachable (test)")

    store.count_by_status = down
    text = await (await client.get("/metrics")).text()
    assert "calls_database_read 0.0" in text
    assert 'calls{status="dialing"} 0.0' in text  # the last counts, said to be the last


async def test_metrics_answer_in_time_when_the_database_hangs(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL frozen (SIGSTOP, a network cut): each scrape waited 10-15 s for the count,
    past Prometheus' 10 s scrape timeout: the server looked down, every metric lost. It
    answers within the probes' bound, with the last counts said to be the last."""
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.2)
    client = await start_app(metrics_reuse_s=0.0)
    assert "calls_database_read 1.0" in await (await client.get("/metrics")).text()
    store = client.app[STORE]
    hang = asyncio.Event()

    async def hangs() -> dict[str, int]:
        await hang.wait()
        return {}

    store.count_by_status = hangs
    started = time.monotonic()
    try:
        resp = await asyncio.wait_for(client.get("/metrics"), 5.0)  # it waited for good
        assert resp.status == 200 and time.monotonic() - started < 4.0
        text = await resp.text()
        assert "calls_database_read 0.0" in text and 'calls{status="dialing"} 0.0' in text
    finally:
        hang.set()


async def test_readiness_says_what_timed_out(
    start_app: AppFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """calls.db locked by another process (a backup tool, sqlite3 in a shell) and
    config.json's lock held elsewhere: /readyz said "timeout" and "config.json: timeout",
    naming neither what did not finish nor why it might not."""
    import fcntl
    import sqlite3

    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.3)
    client = await start_app(
        calls_db_path=tmp_path / "calls.db",
        config_path=tmp_path / "config.json",
        readyz_reuse_s=0.0,
    )
    assert (await client.get("/readyz")).status == 200
    other = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    with open(tmp_path / "config.json.lock", "a") as lock:
        try:
            other.execute("BEGIN EXCLUSIVE")
            fcntl.flock(lock, fcntl.LOCK_EX)
            resp = await client.get("/readyz")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            other.execute("ROLLBACK")
            other.close()
    assert resp.status == 503
    errors = {d["component"]: d["error"] for d in (await resp.json())["details"]}
    assert errors == {
        "database": "a write did not finish within 0.3 s (the database is locked by another"
        " process, overloaded, or its disk stalls)",
        "config": "config.json: a write did not finish within 0.3 s (its lock held"
        " elsewhere, or its disk stalls)",
    }
