"""Bodies whose length is not to be trusted: a client response's (read capped), a request's
compressed body left unread (not unpacked after the answer)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

DEFAULT_BODY_LIMIT = 4096


async def read_capped(response: aiohttp.ClientResponse, limit: int = DEFAULT_BODY_LIMIT) -> bytes:
    """At most `limit` bytes of the body: a receiver cannot make us buffer an endless reply.

    Whatever is left unread makes aiohttp close the connection on release instead of
    reusing it, so nothing more is downloaded.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await response.content.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def close_if_compressed_body_unread(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """A compressed request body its answer left unread (refused before it was read, or cut
    off at a size limit) is not read after it, and its connection closes. aiohttp reads an
    unread body to its end after the answer (for up to 10 s), unpacking it: a 1 MB gzip of
    zeros sent to any path unpacked to 1 GB there, seconds of the loop every other request
    waits on. For each app of the server's loop: its API's (handlers/http.py) and the
    embedded sandbox's port."""
    if "Content-Encoding" in request.headers and not request.content.is_eof():
        request.protocol.close()  # its next bytes are neither parsed nor unpacked
        request.content.feed_eof()  # nothing left to read after the answer
        response.force_close()
