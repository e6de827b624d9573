"""Whose embedded sandbox holds a call's room, for a hang-up sent to another server."""

from __future__ import annotations

import asyncio
import socket

from common.calls.service import other_sandbox_alive
from tests.processes import free_port


async def test_only_a_listening_server_of_this_machine_is_another_owner() -> None:
    """Refused whenever the owner was not this server, a hang-up of a call left by a server
    that stopped, moved to another port or was redeployed under another host name could
    never be made (409 for good, the call live until the reaper's bound)."""
    me = socket.gethostname()
    server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await other_sandbox_alive(f"{me}:{port}@127.0.0.1", own_port=8000)
        assert await other_sandbox_alive(f"{me}:{port}@0.0.0.0", own_port=8000)  # noqa: S104
        # this server, whatever HOST it was reached by
        assert not await other_sandbox_alive(f"{me}:{port}@localhost", own_port=port)
        # gone: nothing listens there any more
        assert not await other_sandbox_alive(f"{me}:{free_port()}@127.0.0.1", own_port=8000)
        # another machine's (a redeployed container's name): out of reach from here
        assert not await other_sandbox_alive(f"{me}-old:{port}@127.0.0.1", own_port=8000)
        assert not await other_sandbox_alive("garbage", own_port=8000)
    finally:
        server.close()
        await server.wait_closed()
