"""The headers the answers carry (Retry-After, Idempotent-Replay) are in /openapi.json for
the route and status that sends them: a client generated from the document reads only what
it documents."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from common.storage.base import DatabaseError
from handlers.keys import STORE
from sandbox import TwirpError
from server import SANDBOX
from tests.conftest import AppFactory
from tests.helpers import SEED_EXAMPLES, hold_requests

Client = TestClient[Any, Any]
SAID = ("Retry-After", "Idempotent-Replay")


def undocumented(spec: dict[str, Any], method: str, path: str, resp: ClientResponse) -> list[str]:
    """The headers of SAID that `resp` carries and the document does not give its status."""
    reply = spec["paths"][path][method.lower()]["responses"][str(resp.status)]
    return [h for h in SAID if h in resp.headers and h not in reply.get("headers", {})]


async def test_the_headers_answers_carry_are_documented(
    start_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration.test_customer_webhooks import SECRET

    # (customer webhooks on: a redeliver is otherwise refused before the database is asked)
    client = await start_app(sandbox_time_scale=0.0, calls_webhook_secret=SECRET)
    spec = await (await client.get("/openapi.json")).json()
    sandbox = client.app[SANDBOX]
    seen: list[tuple[str, str, ClientResponse]] = []

    async def post(path: str, body: Any = None, key: str | None = None) -> ClientResponse:
        headers = {"Idempotency-Key": key} if key else None
        resp = await client.post(path.replace("{id}", "x"), json=body, headers=headers)
        seen.append(("POST", path, resp))
        return resp

    outbound = "/calls/outbound"
    assert (await post(outbound, SEED_EXAMPLES[0], "k1")).status == 200
    assert (await post(outbound, SEED_EXAMPLES[0], "k1")).headers["Idempotent-Replay"] == "1"
    dispatch = hold_requests(sandbox, "CreateDispatch")  # until the retry is answered
    first = asyncio.ensure_future(
        client.post(outbound, json=SEED_EXAMPLES[1], headers={"Idempotency-Key": "k2"})
    )
    await dispatch.arrival()
    assert (await post(outbound, SEED_EXAMPLES[1], "k2")).status == 409  # still being placed
    dispatch.release()
    assert (await first).status == 200
    busy = {"sip_status_code": "486", "sip_status": "Busy Here"}
    sandbox.inject(
        "CreateSIPParticipant", error=TwirpError("resource_exhausted", "486", busy), times=1
    )
    assert (await post(outbound, SEED_EXAMPLES[2], "k3")).status == 502
    assert (await post(outbound, SEED_EXAMPLES[2], "k3")).headers["Idempotent-Replay"] == "1"
    sandbox.inject("CreateSIPParticipant", error=TwirpError("unavailable", "restarting"), times=1)
    assert (await post(outbound, SEED_EXAMPLES[2], "k4")).status == 503
    placed = await (await client.post(outbound, json={"phone_number": "+14155557799"})).json()
    sandbox.inject("DeleteRoom", error=TwirpError("unavailable", "restarting"), times=1)
    hangup = await client.post(f"/calls/{placed['call_id']}/hangup")
    assert hangup.status == 503
    seen.append(("POST", "/calls/{call_id}/hangup", hangup))

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise DatabaseError("connection lost")

    monkeypatch.setattr(client.app[STORE], "list_deliveries", down)
    monkeypatch.setattr(client.app[STORE], "redeliver", down)
    deliveries = await client.get(f"/calls/{placed['call_id']}/deliveries")
    assert deliveries.status == 503
    seen.append(("GET", "/calls/{call_id}/deliveries", deliveries))
    redeliver = await client.post("/deliveries/1/redeliver")
    assert redeliver.status == 503
    seen.append(("POST", "/deliveries/{delivery_id}/redeliver", redeliver))
    missing = {
        f"{method} {path} {resp.status}": headers
        for method, path, resp in seen
        if (headers := undocumented(spec, method, path, resp))
    }
    assert missing == {}
    await sandbox.wait_idle(10)


async def test_every_503_of_a_route_that_uses_the_database_documents_retry_after(
    client: Client,
) -> None:
    """Each answers a database outage with Retry-After (handlers/errors.py); /readyz and
    /healthz (503 once only a restart helps) are verdicts, not requests to try again."""
    spec = await (await client.get("/openapi.json")).json()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if path not in ("/readyz", "/healthz")
        and "503" in operation["responses"]
        and "Retry-After" not in operation["responses"]["503"].get("headers", {})
    ]
    assert missing == []
