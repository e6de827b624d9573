"""LiveKit posts its webhooks to the URL its project was given, spelled as the operator typed
it. `https://host/webhooks/livekit/` (a trailing slash, as a URL is often pasted) was a 404
for every webhook: no call settled until the reaper found its room gone a minute or more
later. Either spelling of WEBHOOK_PATH, with or without its trailing slash, is the webhook."""

from __future__ import annotations

import io
from typing import Any

from aiohttp.test_utils import TestClient

from server import SANDBOX
from tests.conftest import AppFactory
from tests.integration.test_webhooks import event_json, place, sign, timeline

Client = TestClient[Any, Any]


async def _post(client: Client, path: str, body: bytes) -> int:
    headers = {"Content-Type": "application/webhook+json", "Authorization": sign(body)}
    resp = await client.post(path, data=io.BytesIO(body), headers=headers)
    return resp.status


async def _ringing_heard_at(client: Client, path: str) -> list[str]:
    call_id = await place(client)
    body = event_json("participant_joined", call_id, attributes={"sip.callStatus": "ringing"})
    assert await _post(client, path, body) == 200
    return [e["to"] for e in await timeline(client, call_id) if e["event"] == "participant_joined"]


async def test_a_webhook_url_with_a_trailing_slash_reaches_the_webhook(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=100.0)
    client.app[SANDBOX].webhook_url = None  # the test posts every webhook itself
    assert await _ringing_heard_at(client, "/webhooks/livekit/") == ["ringing"]
    assert await _ringing_heard_at(client, "/webhooks/livekit") == ["ringing"]


async def test_a_webhook_path_set_with_a_trailing_slash_takes_the_url_without_it(
    start_app: AppFactory,
) -> None:
    client = await start_app(sandbox_time_scale=100.0, webhook_path="/hooks/livekit/")
    client.app[SANDBOX].webhook_url = None
    assert await _ringing_heard_at(client, "/hooks/livekit") == ["ringing"]
    assert await _ringing_heard_at(client, "/hooks/livekit/") == ["ringing"]


async def test_the_other_spelling_is_not_a_second_route_in_the_api_description(
    client: Client,
) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert "/webhooks/livekit" in spec["paths"]
    assert "/webhooks/livekit/" not in spec["paths"]
