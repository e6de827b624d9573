"""What a customer reads in a delivery's `last_error` when its receiver gave no HTTP answer:
what went wrong, in words its owner can act on, not an aiohttp class name."""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES
from tests.integration.test_customer_webhooks import place, refusing_port, settle, webhook_app

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 speaking whatever `handler` writes; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def self_signed(directory: Path) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 that no authority signed."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(  # noqa: S603, S607 - fixed arguments, openssl from PATH
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def _read_request(reader: asyncio.StreamReader) -> None:
    """The whole request, head and body: left unread, the close would be a reset, which the
    client may see instead of the connection closed without an answer."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            await reader.readexactly(int(value))


async def _answers_ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not HTTP: whatever comes (a request, a TLS hello), an SSH banner, then it waits for
    the client to give up."""
    await reader.read(1)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    await writer.drain()
    await reader.read()  # until the client closes: nothing left unread, no reset
    writer.close()


async def _hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request whole, then closes without an answer."""
    await _read_request(reader)
    writer.close()


async def _first_error(client: Any, call_id: str) -> str:
    listed = (await (await client.get(f"/calls/{call_id}/deliveries")).json())["deliveries"]
    assert listed[0]["state"] == "failed", listed[0]
    error: str = listed[0]["last_error"]
    return error


async def test_a_receiver_that_gives_no_http_answer_is_said_in_words(
    start_app: AppFactory, tmp_path: Path
) -> None:
    """Each of these read "connection failed (<aiohttp class>)": a self-signed certificate,
    https to a plain-http port, a server that is not HTTP (read as a connection that failed,
    though it was made), one that hangs up without an answer, a port nobody listens on."""
    tls = self_signed(tmp_path)
    async with (
        raw_server(_hangs_up, tls) as self_signed_port,  # (the handshake fails first)
        raw_server(_answers_ssh) as ssh_port,
        raw_server(_hangs_up) as hang_up_port,
    ):
        with refusing_port() as closed_port:
            urls = {
                "self-signed": f"https://127.0.0.1:{self_signed_port}/hooks",
                "https to http": f"https://127.0.0.1:{ssh_port}/hooks",
                "not http": f"http://127.0.0.1:{ssh_port}/hooks",
                "hangs up": f"http://127.0.0.1:{hang_up_port}/hooks",
                "closed port": f"http://127.0.0.1:{closed_port}/hooks",
            }
            client = await webhook_app(start_app, None)
            calls = {
                case: await place(client, dict(SEED_EXAMPLES[0], webhook_url=url))
                for case, url in urls.items()
            }
            await settle(client)
            errors = {case: await _first_error(client, call) for case, call in calls.items()}
    # The handshake's reason is OpenSSL's words for it ("wrong version number" here).
    handshake = re.fullmatch(
        r"connection failed: TLS handshake failed \((.+)\): does the URL's port serve https\?",
        errors["https to http"],
    )
    assert handshake is not None, errors["https to http"]
    assert errors == {
        "self-signed": "connection failed: TLS certificate not accepted (self-signed"
        " certificate): it must be valid for the URL's host name and issued by a public"
        " authority",
        "https to http": errors["https to http"],  # matched above
        "not http": "the answer is not HTTP, or has a status line or header over 8 KiB",
        "hangs up": "no answer: the receiver closed the connection without one",
        "closed port": "connection failed: refused or unreachable (is the receiver up, on that"
        " port?)",
    }
