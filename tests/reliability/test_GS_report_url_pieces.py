"""The start-up check of where PUBLIC_BASE_URL leads reads the calls server's answer whole,
however it arrives.

Since the check reads at most 64 KiB of the answer (62ca87a), it took one `read(n)` of the
body, which gives what has arrived so far, not the body up to n bytes: a calls server's 405
arriving in more than one piece (a proxy passing on what it gets as it gets it, nginx's
`proxy_buffering off`; a gzip stream; a slow link) was cut at its first piece, read as no JSON,
and the server warned for 120 s that it answers "not as a calls server does" and that every
call's answer, transcript and analysis were lost, while the agents' reports arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from common.contracts import REPORTS_PATH
from server import report_url_refusal
from tests.conftest import AppFactory
from tests.helpers import serving


async def test_the_calls_servers_answer_in_pieces_is_read_whole(start_app: AppFactory) -> None:
    client = await start_app()
    upstream = str(client.make_url(""))

    async def relay(request: web.Request) -> web.StreamResponse:
        """A proxy passing the calls server's answer on as it gets it, a piece at a time."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(upstream + request.path, allow_redirects=False) as answer,
        ):
            body = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k in ("Content-Type", "Allow")}
        response = web.StreamResponse(status=answer.status, headers=kept)
        await response.prepare(request)
        for start in range(0, len(body), 16):
            await response.write(body[start : start + 16])
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    async with serving(relay) as proxy, aiohttp.ClientSession() as session:
        direct = await report_url_refusal(upstream.rstrip("/") + REPORTS_PATH, session)
        relayed = await report_url_refusal(proxy + REPORTS_PATH, session)
    assert direct is None, direct
    assert relayed is None, relayed


async def test_an_answer_of_more_than_it_reads_is_still_no_calls_server(
    aiohttp_server: Any,
) -> None:
    """What is read stays bounded: a JSON error past 64 KiB is cut, no calls server's."""

    async def big(_request: web.Request) -> web.Response:
        padding = "x" * (128 * 1024)
        return web.json_response(
            {"status": "error", "message": padding}, status=405, headers={"Allow": "POST"}
        )

    app = web.Application()
    app.router.add_get(REPORTS_PATH, big)
    site = await aiohttp_server(app)
    async with aiohttp.ClientSession() as session:
        refusal = await report_url_refusal(str(site.make_url(REPORTS_PATH)), session)
    assert refusal == ("it answers HTTP 405, not as a calls server does", False)
