"""A call's or campaign's `webhook_url` on a server without CALLS_WEBHOOK_SECRET is 422: the
message named the setting as unset but not that setting it is the cure (nor that the field
may be left out), and /openapi.json's description of the field did not say it needs it, so
a client reading the document could not tell why a valid URL was refused."""

from __future__ import annotations

from tests.conftest import AppFactory

URL = "https://example.com/hook"
CURE = "sets CALLS_WEBHOOK_SECRET to enable them"


async def test_webhook_url_refused_saying_what_to_set(start_app: AppFactory) -> None:
    client = await start_app()
    resp = await client.post(
        "/calls/outbound", json={"phone_number": "+14155550123", "webhook_url": URL}
    )
    assert resp.status == 422
    (detail,) = (await resp.json())["details"]
    assert detail["field"] == "webhook_url" and CURE in detail["error"]
    resp = await client.post(
        "/campaigns",
        json={
            "name": "hooks",
            "recipients": [{"phone_number": "+14155550123"}],
            "defaults": {"webhook_url": URL},
        },
    )
    assert resp.status == 422
    (detail,) = (await resp.json())["details"]
    assert detail["field"] == "defaults.webhook_url" and CURE in detail["error"]


async def test_openapi_says_webhook_url_needs_the_secret(start_app: AppFactory) -> None:
    client = await start_app()
    spec = await (await client.get("/openapi.json")).json()
    field = spec["components"]["schemas"]["OutboundCall"]["properties"]["webhook_url"]
    assert "CALLS_WEBHOOK_SECRET" in field["description"]
