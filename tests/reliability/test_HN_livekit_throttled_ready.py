"""LiveKit rate-limiting our key (HTTP 429, Twirp `resource_exhausted`) while it answers.

/readyz answered 503 `livekit` on every server at once (they share the key, and the limit is
LiveKit's on the project): a load balancer took every server out, and with them LiveKit's own
webhooks (the calls' outcomes), the agents' reports and GET /calls: a throttle made a full
outage. And the start-up WARNING told the operator to check LIVEKIT_URL and the keys, which
were right. A LiveKit that answers, even 429, is reachable: ready stays 200, saying it in
`degraded`, in a WARNING once a minute and in `livekit_over_limit`; a call placed meanwhile
is answered 503 with LiveKit's Retry-After, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.helpers import livekit_done, serving

CALL = {"phone_number": "+14155550129", "name": "Throttled", "language": "en", "emotion": "Calm"}


def _twirp_429(_request: web.Request) -> web.Response:
    body = '{"code": "resource_exhausted", "msg": "rate limit exceeded"}'
    return web.Response(
        status=429, text=body, content_type="application/json", headers={"Retry-After": "7"}
    )


def _page_429(_request: web.Request) -> web.Response:
    page = "<html><body><h1>429 Too Many Requests</h1></body></html>"
    return web.Response(status=429, text=page, content_type="text/html")


# (its answer, the Retry-After a call placed meanwhile is given)
ANSWERS: dict[str, tuple[Callable[[web.Request], web.Response], str]] = {
    "LiveKit's resource_exhausted": (_twirp_429, "7"),
    "a gateway's 429 page": (_page_429, "2"),
}


async def _on_livekit(start_app: AppFactory, url: str) -> TestClient[Any, Any]:
    return await start_app(
        livekit_url=url,
        livekit_api_key="APIstandin",
        livekit_api_secret="stand-in-secret-0123456789abcdef0123456789",
        sip_outbound_trunk_id="ST_standin",
        readyz_reuse_s=0,  # each /readyz checks again
    )


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        await asyncio.sleep(0.05)


def _gauge(metrics: str) -> float:
    (line,) = [x for x in metrics.splitlines() if x.startswith("livekit_over_limit ")]
    return float(line.split()[1])


@pytest.mark.parametrize("case", list(ANSWERS), ids=list(ANSWERS))
async def test_livekit_over_its_limit_keeps_the_server_ready(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    limited = True

    async def twirp(request: web.Request) -> web.Response:
        await request.read()
        method = request.path.rsplit("/", 1)[-1]
        return ANSWERS[case][0](request) if limited else livekit_done(method)

    caplog.set_level(logging.INFO)
    async with serving(twirp) as url:
        client = await _on_livekit(start_app, url)
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()  # was 503 "not ready", livekit
        body = await ready.json()
        assert body["status"] == "ok"
        (degraded,) = body["degraded"]
        assert degraded["component"] == "livekit"
        assert "LiveKit answered 429" in degraded["error"]
        assert _gauge(await (await client.get("/metrics")).text()) == 1
        assert "ready, but livekit is over a limit of its own" in caplog.text
        assert "not ready" not in caplog.text

        # A call placed meanwhile: refused 503, to be tried again.
        placed = await client.post("/calls/outbound", json=CALL)
        assert placed.status == 503
        assert placed.headers["Retry-After"] == ANSWERS[case][1]

        # LiveKit has room again: no more `degraded`, and the log says it.
        limited = False

        async def plain_ready() -> bool:
            answer = await client.get("/readyz")
            return answer.status == 200 and await answer.json() == {"status": "ok"}

        await eventually(plain_ready, "ready without degraded", 10)
        assert _gauge(await (await client.get("/metrics")).text()) == 0
        assert "livekit is no longer over a limit" in caplog.text


async def test_the_start_up_line_says_livekit_is_over_a_limit_not_to_check_settings(
    start_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(_answer_429) as url:
        caplog.set_level(logging.INFO, logger="server")
        await _on_livekit(start_app, url)

        async def said() -> bool:
            return "did not answer as it should at start-up" in caplog.text or (
                "answers, but over a limit of its own" in caplog.text
            )

        await eventually(said, "the start-up line about LiveKit", 10)
    (line,) = [r.getMessage() for r in caplog.records if "LiveKit at" in r.getMessage()]
    assert "answers, but over a limit of its own" in line
    assert "LiveKit answered 429 resource_exhausted" in line
    assert "check LIVEKIT_URL" not in line  # the settings were right


async def _answer_429(request: web.Request) -> web.Response:
    await request.read()
    return _twirp_429(request)
