"""The test harness itself: what a flaky port would otherwise fail at random."""

from __future__ import annotations

import gc
import socket
import warnings
from typing import Any

import pytest

import tests.conftest
from tests.conftest import AppFactory
from tests.processes import free_port


async def test_a_port_taken_before_the_app_binds_it_is_retried(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port found free can be taken before the app binds it (by another worker, or an
    outgoing connection): the app is made again on another port, and the socket of the bind
    that failed is closed (left to the collector, its warning failed a later test)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports = [taken.getsockname()[1], free_port()]
        monkeypatch.setattr(tests.conftest, "free_port", lambda: ports.pop(0))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)
            client: Any = await start_app()
            gc.collect()
        assert ports == [] and client.server.port != taken.getsockname()[1]
        assert (await client.get("/healthz")).status == 200


def test_listening_ports_are_drawn_below_the_ephemeral_range() -> None:
    from tests.processes import _ephemeral_ports

    assert all(free_port() < _ephemeral_ports().start for _ in range(20))


def test_test_workers_draw_ports_from_shares_of_their_own_and_never_twice() -> None:
    """A port is free when drawn but bound only when the server process has started: another
    worker's app took one in that time, and answered the test's requests (CI, stop 35)."""
    from tests.processes import _worker_share

    ports = range(20000, 32768)
    shares = [_worker_share(ports, f"gw{i}", "3") for i in range(3)]
    assert not set(shares[0]) & set(shares[1]) and not set(shares[1]) & set(shares[2])
    assert min(len(share) for share in shares) == len(ports) // 3
    assert _worker_share(ports, "", "") == ports  # outside xdist: the whole range
    assert _worker_share(ports, "gw5", "2") == ports  # a count that does not fit: the same
    drawn = [free_port() for _ in range(200)]
    assert len(set(drawn)) == len(drawn)
