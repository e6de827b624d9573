"""/readyz on a stalled config.json disk: one probe of config.json's directory at a time.

Regression: each readiness check ran a new probe on the loop's default executor, whose
thread the stalled fsync then held; the check answered 503 after 2 s, but its thread stayed
held. A kubelet probing every second held another thread each second: after 6 probes (the
executor's 6 threads on a 2-core machine) every thread was held, and what else runs there
waited too: config.json's own writes, and the DNS lookups of aiohttp's default resolver
(the LiveKit host's), so LiveKit's probe and every call's requests to it stalled with it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from common.config_store import store as config_store_module
from handlers import health
from tests.conftest import AppFactory

PROBE_BYTES = b"\n" * 4096  # what the probe writes (store._probe_sync)


async def test_a_stalled_probe_is_waited_for_not_started_again(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "PROBE_TIMEOUT_S", 0.2)
    client = await start_app(readyz_reuse_s=0.0)
    real = config_store_module._write_durably
    go = threading.Event()
    held: list[Path] = []
    count_lock = threading.Lock()

    def stalled(path: Path, data: bytes, mode: int = 0o600) -> None:
        if data == PROBE_BYTES:  # the disk under config.json stalls every probe's fsync
            with count_lock:
                held.append(path)
            go.wait(30)
        real(path, data, mode)

    monkeypatch.setattr(config_store_module, "_write_durably", stalled)
    try:
        answers: list[tuple[int, Any]] = []
        for _ in range(8):
            resp = await client.get("/readyz")
            answers.append((resp.status, [d["component"] for d in (await resp.json())["details"]]))
        with count_lock:
            probes_held = len(held)
    finally:
        go.set()
    assert answers == [(503, ["config"])] * 8
    assert probes_held == 1  # the first probe's thread, waited for by every later check
    # Once the disk answers again, so does readiness.
    monkeypatch.setattr(config_store_module, "_write_durably", real)
    resp = await client.get("/readyz")
    for _ in range(50):
        if resp.status == 200:
            break
        resp = await client.get("/readyz")
    assert resp.status == 200
