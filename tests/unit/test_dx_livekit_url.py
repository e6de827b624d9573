"""LIVEKIT_URL naming something that is not LiveKit's API (a path pasted with it, another
service on the port): every request is a 404 that no LiveKit route gives. It read
"readiness probe: LiveKit answered 404 unknown:" (an empty message after its colon), in the
start-up warning, /readyz and every refused call's answer, with nothing saying that the URL
is what is wrong. A room LiveKit does not have (its own 404, `not_found`) stays as it was."""

from __future__ import annotations

import asyncio
import errno
import json
import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from common.livekit.client import (
    LiveKitError,
    _translate,
    check_reachable,
    create_client,
    create_session,
)
from common.settings import Settings
from tests.helpers import serving


async def _not_found_page(_request: web.Request) -> web.Response:
    return web.Response(status=404, text="404 page not found\n")  # Go's net/http, as LiveKit's


async def _twirp_not_found(_request: web.Request) -> web.Response:
    body = {"code": "not_found", "msg": "requested room does not exist"}
    return web.Response(status=404, text=json.dumps(body), content_type="application/json")


async def _probe(url: str) -> str:
    async with create_session() as session:
        lkapi = create_client(Settings(), url, session)
        with pytest.raises(LiveKitError) as caught:
            await check_reachable(lkapi)
    return str(caught.value)


async def test_a_livekit_url_with_no_livekit_api_behind_it_says_to_check_it() -> None:
    async with serving(_not_found_page) as base:
        said = await _probe(f"{base}/rtc")
    assert said.startswith("LiveKit did not answer the readiness probe: readiness probe:")
    assert "LiveKit answered 404 unknown (" in said, said  # no empty message after a colon
    assert "LIVEKIT_URL" in said, said


async def test_livekits_own_not_found_is_not_said_to_be_the_url() -> None:
    async with serving(_twirp_not_found) as base:
        said = await _probe(base)
    assert "404 not_found: requested room does not exist" in said, said
    assert "LIVEKIT_URL" not in said, said


async def test_a_tls_url_to_a_livekit_without_tls_says_what_failed() -> None:
    """LIVEKIT_URL=wss://... (or https://) for a LiveKit that speaks plain HTTP on that port:
    it read "LiveKit unreachable (ClientConnectorSSLError)", the class's name only, as if
    nothing answered. It says the TLS handshake failed, why, and which schemes need TLS."""
    async with serving(_not_found_page) as base:
        said = await _probe(base.replace("http://", "wss://"))
    assert "TLS" in said and "wrong version number" in said, said
    assert "ws:// or http://" in said, said
    assert "ClientConnectorSSLError" not in said, said


async def test_a_plain_url_to_a_livekit_serving_tls_says_to_check_the_scheme() -> None:
    """LIVEKIT_URL=ws://... to a port that speaks TLS: the server drops the plain request
    unanswered, and it read "LiveKit unreachable (ServerDisconnectedError)" alone."""

    async def drops(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # a TLS server reads a ClientHello, gets HTTP: it hangs up
        writer.close()

    server = await asyncio.start_server(drops, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        said = await _probe(f"ws://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    assert "closed the connection without an answer" in said, said
    assert "LIVEKIT_URL must start with wss://" in said, said
    assert "ServerDisconnectedError" not in said, said


def _connect_failure(cls: type[aiohttp.ClientOSError], code: int, text: str) -> BaseException:
    key = ConnectionKey("livekit.internal", 7880, False, True, None, None, None, None)
    os_error = OSError(code, text)
    if issubclass(cls, aiohttp.ClientConnectorError):
        return cls(key, os_error)
    return cls(code, text)


@pytest.mark.parametrize(
    ("cls", "code", "words"),
    [
        (aiohttp.ClientConnectorDNSError, socket.EAI_NONAME, "its host name did not resolve"),
        (aiohttp.ClientConnectorError, errno.EHOSTUNREACH, "no route to its host"),
        (aiohttp.ClientConnectorError, errno.ETIMEDOUT, "connecting timed out"),
        (aiohttp.ClientConnectorError, errno.EACCES, "could not connect: Permission denied"),
        (aiohttp.ClientOSError, errno.ECONNRESET, "the connection failed: Connection reset"),
    ],
)
def test_a_failed_connection_is_said_in_words_without_the_address(
    cls: type[aiohttp.ClientOSError], code: int, words: str
) -> None:
    """It read "LiveKit unreachable (ClientConnectorError)" (or the DNS error's class name)
    whatever the failure; the error's own text names the address, which an API answer
    carrying the reason must not ("Connect call failed ('10.0.0.5', 7880)")."""
    exc = _connect_failure(cls, code, "Connect call failed ('10.0.0.5', 7880)")
    said = str(_translate(exc, "readiness probe"))
    assert f"LiveKit unreachable ({words}" in said, said
    assert "10.0.0.5" not in said and "livekit.internal" not in said, said
    assert cls.__name__ not in said, said
