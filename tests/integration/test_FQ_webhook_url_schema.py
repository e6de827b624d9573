"""/openapi.json gives POST /calls/outbound's `webhook_url` the syntax the server can take
(http(s), a host, no credentials, no fragment, no whitespace or backslash): it was any
string, so `ftp://x` (seen with schemathesis on the real server.py: 422 "URL scheme must be
https or http"), `https:host` or ` https://host` were valid by the document and refused."""

from __future__ import annotations

import base64
import json

import jsonschema_rs

from tests.conftest import AppFactory

SECRET = "whsec_" + base64.b64encode(b"customer-webhook-secret-for-tests-0123").decode()
NUMBER = "+14155557705"
REFUSED = [
    "ftp://127.0.0.1/hook",
    "https:127.0.0.1/hook",
    "https://",
    " https://127.0.0.1/hook",
    "https://user:pw@127.0.0.1/hook",
    "https://127.0.0.1/hook#part",
    "https://127.0.0.1/a b",
]
TAKEN = ["http://127.0.0.1:9/hook", "HTTPS://127.0.0.1:8443/hook?x=1", "https://[::1]/a@b"]


async def test_the_document_reads_webhook_urls_as_the_server_does(start_app: AppFactory) -> None:
    client = await start_app(calls_webhook_secret=SECRET, calls_webhook_allow_private=True)
    spec = await (await client.get("/openapi.json")).json()
    schemas = json.dumps(spec["components"]["schemas"]).replace("/components/schemas/", "/$defs/")
    valid = jsonschema_rs.Draft202012Validator(
        {"$ref": "#/$defs/OutboundCall", "$defs": json.loads(schemas)}
    )
    for url, taken in [(u, False) for u in REFUSED] + [(u, True) for u in TAKEN]:
        body = {"phone_number": NUMBER, "webhook_url": url}
        resp = await client.post("/calls/outbound", data=json.dumps(body))
        assert resp.status == (200 if taken else 422), (url, await resp.text())
        assert valid.is_valid(body) == taken, url
