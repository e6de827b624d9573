"""The tests' loops close the connections a stopped server accepted too late (tests/loop_leaks.py),
and only those."""

from __future__ import annotations

import asyncio
import socket
import weakref

from tests import loop_leaks


class _Kept(asyncio.Protocol):
    made: list[asyncio.Transport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.made.append(transport)


async def _server_and_client() -> tuple[asyncio.Server, asyncio.Transport, asyncio.Transport]:
    loop = asyncio.get_running_loop()
    _Kept.made = []
    server = await loop.create_server(_Kept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    for _ in range(100):
        if _Kept.made:
            break
        await asyncio.sleep(0.01)
    assert len(_Kept.made) == 1
    return server, _Kept.made[0], client


def test_a_stopped_servers_open_connection_is_closed_with_the_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        server, accepted, client = loop.run_until_complete(_server_and_client())
        server.close()  # 3.11: the listening socket only; `accepted` stays open
        # the client's side is not among them: one left open is the code's own leak
        assert loop_leaks.orphans(loop) == [accepted]
        sock = accepted.get_extra_info("socket")
        assert sock.fileno() != -1
        client.close()
    finally:
        loop.close()  # patched by tests/conftest.py
    assert accepted.is_closing()
    assert sock.fileno() == -1


def test_a_listening_servers_connection_is_left_open() -> None:
    loop = asyncio.new_event_loop()
    try:
        server, accepted, client = loop.run_until_complete(_server_and_client())
        assert loop_leaks.orphans(loop) == []
        server.close()
        accepted.close()
        client.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()


def test_an_accepted_socket_no_transport_took_is_closed_with_its_loop() -> None:
    loop = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    mine, peer = socket.socketpair()
    theirs, their_peer = socket.socketpair()
    try:
        loop_leaks._accepted[mine] = weakref.ref(loop)
        loop_leaks._accepted[theirs] = weakref.ref(other)
    finally:
        loop.close()
    assert mine.fileno() == -1
    assert theirs.fileno() != -1  # another loop's: left alone
    for sock in (peer, theirs, their_peer):
        sock.close()
    other.close()
