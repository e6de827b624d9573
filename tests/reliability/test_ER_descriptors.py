"""Running out of file descriptors for a moment must not wedge the server for good.

phonenumbers loads a region's metadata at the first number of that region (an import of
its `phonenumbers.data.region_XX` module), holding `PhoneMetadata._metadata_lock`, which it
does not release when the load raises. Seen live: a server whose open files limit a burst
of 150 connections used up answered one call 500 ("[Errno 24] Too many open files:
.../phonenumbers/data/region_US.py"), and the next number of a region not loaded yet
blocked its event loop on that lock for good: no request (`/healthz` included) was ever
answered again, no line logged, 84 connections left in CLOSE-WAIT, after the burst had
ended. The server now loads every region's metadata as it starts, so no request loads any.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import threading
from collections.abc import Iterator
from typing import Any

import phonenumbers
import pytest

from tests.conftest import AppFactory

GB = "GB"
ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's line
GB_NUMBER = "+447700900123"  # a valid UK mobile number (Ofcom's drama range)


async def test_a_number_of_a_region_first_called_while_descriptors_run_out_is_placed(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = phonenumbers.PhoneMetadata
    # A lock of this test's own: one left held cannot hang the tests after it.
    lock = threading.Lock()
    monkeypatch.setattr(meta, "_metadata_lock", lock)
    loaded = meta.metadata_for_region(GB)
    assert loaded is not None
    out_of_descriptors = False

    def load(region: str) -> None:
        """The region's import: refused as it is once every descriptor is in use."""
        if out_of_descriptors:
            raise OSError(errno.EMFILE, "Too many open files", f"region_{region}.py")
        meta._region_metadata[region] = loaded

    # GB as in a process that has not met a UK number yet.
    monkeypatch.delitem(meta._region_metadata, GB)
    monkeypatch.setitem(meta._region_available, GB, load)
    client = await start_app()

    out_of_descriptors = True  # a burst of connections took every descriptor
    resp = await client.post("/calls/outbound", json={"phone_number": GB_NUMBER, "name": "Ann"})
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "success"
    # Held, the next number of a region not loaded yet would block the event loop for good.
    assert not lock.locked()


@contextlib.contextmanager
def every_descriptor_in_use() -> Iterator[None]:
    """This process's open files limit lowered to its lowest free descriptor number: every
    new descriptor (an accept, an open) fails EMFILE until the limit is given back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = {int(fd) for fd in os.listdir("/proc/self/fd")}
    lowest_free = next(n for n in range(len(in_use) + 2) if n not in in_use)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_connections_that_cannot_be_accepted_are_said_once_not_flooded(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio logged each failed accept with its traceback, and went on trying up to its
    backlog times each time the socket was readable again: 483,000 lines (43 MB) in the 27 s
    a live server's limit of 100 was used up. Now one line, and the server answers again
    once descriptors are free."""
    client = await start_app()
    port = client.server.port
    assert port is not None
    waiting = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
    try:
        caplog.set_level(logging.ERROR, logger="asyncio")
        with every_descriptor_in_use():
            await asyncio.sleep(1.5)  # asyncio tries again after 1 s
        said = [r for r in caplog.records if str(r.msg).startswith(ACCEPT_FAILED)]
        assert len(said) == 1, f"{len(said)} lines"
        assert "Too many open files" in said[0].getMessage()
        assert said[0].exc_info is None  # one line, no traceback
        resp = await client.get("/healthz")
        assert resp.status == 200
    finally:
        for sock in waiting:
            sock.close()
