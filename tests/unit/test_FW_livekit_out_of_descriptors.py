"""A call LiveKit was never asked about, because this server had no descriptor left to open
a connection with, says so.

Seen live: a server started under `ulimit -n 256` and sent 300 calls at once answered 56 of
them 503 `LiveKit did not place the call: agent dispatch: LiveKit unreachable
(ClientConnectorError)` and logged the same: LiveKit was up, this process was out of file
descriptors. The operator was sent to LiveKit; the reason now names this server's limit.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

from common.livekit.client import LiveKitUnavailable, create_client, create_session, end_room
from common.settings import Settings
from tests.processes import free_port
from tests.reliability.test_ER_descriptors import every_descriptor_in_use


@contextlib.contextmanager
def no_descriptor_left() -> Iterator[None]:
    """every_descriptor_in_use, with the few below the limit that were free taken too."""
    taken: list[int] = []
    with every_descriptor_in_use():
        try:
            with contextlib.suppress(OSError):
                while True:
                    taken.append(os.open(os.devnull, os.O_RDONLY))
            yield
        finally:
            for fd in taken:
                os.close(fd)


async def refused_for_want_of_descriptors(client: Any, path: str, body: dict[str, Any]) -> None:
    """`body` posted to `path` (the real app's `client`) with no descriptor left: a 503
    saying this server is out of file descriptors, with Retry-After."""
    with no_descriptor_left():
        resp = await client.post(path, json=body)
        answer: dict[str, Any] = await resp.json()
    assert resp.status == 503, answer
    assert "out of file descriptors" in answer["error"], answer
    assert resp.headers.get("Retry-After"), dict(resp.headers)


async def test_a_request_no_descriptor_was_left_for_names_this_server_not_livekit() -> None:
    session = create_session()
    lkapi = create_client(Settings(), f"http://127.0.0.1:{free_port()}", session)
    try:
        with no_descriptor_left(), pytest.raises(LiveKitUnavailable) as raised:
            await end_room(lkapi, "call-0123456789ab")
    finally:
        await session.close()
    reason = raised.value.reason
    assert "out of file descriptors" in reason, reason
    assert "LiveKit unreachable" not in reason, reason
    assert not raised.value.maybe_done  # no connection: LiveKit never saw it
    assert raised.value.http_status == 503
