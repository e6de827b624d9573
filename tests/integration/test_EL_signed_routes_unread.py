"""The signed routes (LiveKit's webhooks, agents' reports) answer anyone who can connect: a
forged post is refused on its token alone, its body never read. Before, the body was read
first, whole (up to 1 MiB), and only then the token looked at: 1,000 forged posts of 1 MiB
took the server from 70 MB to 1.1 GB, for good, and /healthz to 2.3 s meanwhile."""

from __future__ import annotations

import json

import pytest

from common.contracts import REPORTS_PATH
from common.settings import DEV_API_KEY, DEV_API_SECRET
from common.signing import sign_body
from handlers import http
from tests.conftest import AppFactory
from tests.integration.test_hostile_requests import answer_to, post_head, still_serving
from tests.integration.test_webhooks import PATH, quiet_app, sign

MIB = 1024 * 1024


@pytest.mark.parametrize("path", [PATH, REPORTS_PATH])
@pytest.mark.parametrize("auth", [b"", b"Authorization: Bearer forged.token.here"])
async def test_a_forged_post_is_refused_before_its_body_is_sent(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch, path: str, auth: bytes
) -> None:
    # A body read first would be waited for (and the request answered 408 once this runs
    # out): the 401 comes from the token alone, with a MiB announced and 2 bytes sent.
    monkeypatch.setattr(http, "BODY_READ_TIMEOUT_S", 0.5)
    client = await quiet_app(start_app)
    head = post_head(path, b"x" * MIB, *([auth] if auth else []))
    answer, body = await answer_to(client, head + b"\r\n{}")
    assert answer.split()[1] == b"401", answer
    assert "signature did not verify" in json.loads(body)["error"]
    await still_serving(client)


async def test_a_genuine_token_over_another_body_is_still_refused(start_app: AppFactory) -> None:
    """The token is checked first, the body it signs once read: a token lifted from one
    webhook or report does not carry another body."""
    client = await quiet_app(start_app)
    for path, token in (
        (PATH, sign(b"{}")),
        (REPORTS_PATH, sign_body(b"{}", DEV_API_KEY, DEV_API_SECRET, room="call-1")),
    ):
        resp = await client.post(
            path, data=b'{"event": "room_finished"}', headers={"Authorization": token}
        )
        assert resp.status == 401, (path, await resp.text())
    metrics = await (await client.get("/metrics")).text()
    assert 'webhooks_total{result="unverified"} 1.0' in metrics
    assert 'agent_reports_total{result="unverified"} 1.0' in metrics


async def test_an_oversized_forged_post_is_still_413(start_app: AppFactory) -> None:
    """Its Content-Length says it is too large before any byte is read: 413, as before."""
    client = await quiet_app(start_app)
    for path in (PATH, REPORTS_PATH):
        head = post_head(path, b"x" * (MIB + 1), b"Authorization: Bearer forged")
        answer, _ = await answer_to(client, head + b"\r\n")
        assert answer.split()[1] == b"413", answer
