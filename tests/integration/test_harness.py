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
