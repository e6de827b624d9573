"""Connections a stopped test server accepted too late to be closed, closed with the test's loop.

A test that stops its app while the embedded sandbox (or an agent, or the app's customer
webhooks) is still connecting to a server in the same loop can leave one server-side
connection open: asyncio 3.11's `Server.close()` closes the listening socket only, and a
connection it had already accepted becomes aiohttp's only when `connection_made` runs, a loop
turn or two later: after aiohttp's shutdown has closed the connections it knew of. (Python
3.13 added `Server.close_clients()` for this.) Its `unclosed transport` warning then fails
whichever later test the garbage collector happens to run in (filterwarnings=error), on a
loaded machine about one full run in four.

When a test's loop closes, `close_orphans` closes the server-side connections still open
whose listening server has been closed, and the connections accepted whose transport was
never made (the accepting task cancelled before its first step); the loop runs once more so
that their `connection_lost` runs, as a server process exiting would close them. Client-side
connections are left alone: one left open is the code's own leak, and its warning stands, as
does any connection of a server still listening.
"""

from __future__ import annotations

import asyncio
import socket
import weakref
from asyncio import selector_events
from typing import Any

# Each accepted socket and the loop that accepted it.
_accepted: weakref.WeakKeyDictionary[socket.socket, weakref.ReferenceType[Any]] = (
    weakref.WeakKeyDictionary()
)
_original_accept = selector_events.BaseSelectorEventLoop._accept_connection2  # type: ignore[attr-defined]
_original_close = selector_events.BaseSelectorEventLoop.close


def _accept_connection2(
    self: selector_events.BaseSelectorEventLoop,
    protocol_factory: Any,
    conn: socket.socket,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """The accepting coroutine, made as asyncio makes it; its socket noted first."""
    _accepted[conn] = weakref.ref(self)
    return _original_accept(self, protocol_factory, conn, *args, **kwargs)


def orphans(loop: asyncio.AbstractEventLoop) -> list[asyncio.Transport]:
    """The server-side transports of `loop` still open whose listening server is closed."""
    found: list[asyncio.Transport] = []
    for transport in list(getattr(loop, "_transports", {}).values()):
        server = getattr(transport, "_server", None)
        if server is None or transport.is_closing():
            continue
        if getattr(server, "_sockets", None) is None:  # Server.close() has run
            found.append(transport)
    return found


def close_orphans(loop: asyncio.AbstractEventLoop) -> int:
    """Close what `orphans` finds and the accepted sockets no transport took; returns how many."""
    left = orphans(loop)
    for transport in left:
        transport.abort()
    # One turn runs each abort's connection_lost (and any close() scheduled by a task
    # cancelled at the loop's end), which closes the socket.
    loop.run_until_complete(asyncio.sleep(0))
    transport_fds = {
        t.get_extra_info("socket").fileno()
        for t in list(getattr(loop, "_transports", {}).values())
        if t.get_extra_info("socket") is not None
    }
    raw = [
        sock
        for sock, accepted_by in list(_accepted.items())
        if accepted_by() is loop and sock.fileno() != -1 and sock.fileno() not in transport_fds
    ]
    for sock in raw:
        sock.close()
    return len(left) + len(raw)


def _close(self: Any) -> None:
    if not self.is_closed() and not self.is_running():
        close_orphans(self)
    _original_close(self)


def install() -> None:
    """Patch the selector loop of this process (the tests' loops) as described above."""
    selector_events.BaseSelectorEventLoop._accept_connection2 = _accept_connection2  # type: ignore[attr-defined]
    selector_events.BaseSelectorEventLoop.close = _close  # type: ignore[method-assign]
