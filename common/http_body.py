"""Reading a client response's body without trusting its length."""

from __future__ import annotations

import aiohttp

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
