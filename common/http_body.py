"""Bodies whose length is not to be trusted: a client response's (read capped), a request's
body left unread (not read after the answer)."""

from __future__ import annotations

import aiohttp
from aiohttp import web

DEFAULT_BODY_LIMIT = 4096
# An unread body at most this long, not compressed, declared by its Content-Length, is read
# after its answer (close_if_body_unread); any other is not.
LINGER_MAX_BYTES = 1024 * 1024


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


def close_if_body_unread(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """A request body its answer left unread, not all arrived (refused before it was read: no
    token, a Content-Length over the limit, a path no route has; or cut off at a size limit),
    is not read after it, and its connection closes (`Connection: close`). aiohttp reads an
    unread body to its end after the answer, for up to 10 s: ten connections refused 401
    pushed 7 GB into the server in 10 s and /healthz took 21 ms at p50, not 2; compressed, it
    unpacked it too (a 1 MB gzip of zeros, 1 GB, 3 s of the loop every other request waits
    on). A body all arrived keeps its connection open: what is left of it is dropped with
    the request; so does a small plain one (`_read_after_answer`), read to its end. For each
    app of the server's loop: its API's (handlers/http.py) and the embedded sandbox's port."""
    if request.content.is_eof() or _read_after_answer(request):
        return
    request.protocol.close()  # its next bytes are neither parsed nor unpacked
    request.content.feed_eof()  # nothing left to read after the answer
    response.force_close()


def _read_after_answer(request: web.BaseRequest) -> bool:
    """The rest of this unread body is read after the answer, as aiohttp does, its connection
    kept: a plain body of at most LINGER_MAX_BYTES by its Content-Length, whose client did not
    ask to hear first (`Expect`: refused, it may send nothing, and its next request would be
    read as this one's body). Closed on with its client still sending, a client may see a
    reset instead of its answer (a `requests` upload with a wrong token, over a real
    network); what such a body makes the server read is what an accepted one does."""
    length = request.content_length
    return (
        length is not None
        and length <= LINGER_MAX_BYTES
        and "Content-Encoding" not in request.headers
        and "Expect" not in request.headers
    )
