"""A request aiohttp's HTTP parser refuses is said in one DEBUG line quoting the parser's
reason, which quotes the offending header line: an Authorization header with a space before
its colon, or folded onto a second line (as some proxies fold long values), put the API token
or a LiveKit JWT in the log at LOG_LEVEL=DEBUG (the access log cuts them; this line did not)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.settings import DEV_API_KEY, DEV_API_SECRET
from common.signing import sign_body
from tests.conftest import AppFactory

TOKEN = "el-token-abcdefghijklmnop-0123"
JWT = sign_body(b"{}", DEV_API_KEY, DEV_API_SECRET)

MALFORMED = {
    "space before the colon": f"Authorization : Bearer {TOKEN}",
    "folded": f"Authorization: Bearer\r\n {TOKEN}",
    "a JWT, folded": f"Authorization:\r\n {JWT}",
    "a JWT, space before the colon": f"Authorization : {JWT}",
}


@pytest.mark.parametrize("header", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_authorization_header_is_not_logged(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    client = await start_app(calls_api_token=TOKEN)
    caplog.set_level(logging.DEBUG)
    raw = f"GET /calls HTTP/1.1\r\nHost: localhost\r\n{header}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.split()[1] == b"400", answer[:200]
    refused = [r.getMessage() for r in caplog.records if "malformed request" in r.getMessage()]
    assert len(refused) == 1, refused  # still said, with the parser's reason
    assert "[redacted]" in refused[0] or "[token]" in refused[0], refused
    lines = [r.getMessage() for r in caplog.records]
    assert not [line for line in lines if TOKEN in line or JWT.split(".")[1] in line], lines
