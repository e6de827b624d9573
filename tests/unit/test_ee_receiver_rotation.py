"""The README's local receiver takes the server's CALLS_WEBHOOK_SECRET as it is during a
rotation (`whsec_new,whsec_old`, 27282df): it refused that value, "CALLS_WEBHOOK_SECRET is
not valid base64 after 'whsec_'", though the server took it. A delivery signed by either
secret verifies (receivers not moved yet sign-check with the old one); one by neither is
still refused."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.notify.signing import WebhookVerificationError, sign, verify
from sandbox.receiver import Receiver

NEW = "whsec_" + base64.b64encode(b"n" * 32).decode()
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"x" * 32).decode()
BODY = json.dumps({"type": "call.ended", "data": {"call_id": "call-1", "status": "failed"}})


def _headers(secret: str, msg_id: str) -> dict[str, str]:
    return sign(secret, msg_id, datetime.now(UTC), BODY.encode())


async def test_the_receiver_takes_the_servers_rotation_list() -> None:
    out = io.StringIO()
    async with TestClient(TestServer(Receiver(f"{NEW},{OLD}", out).app())) as client:
        for secret, msg_id in ((f"{NEW},{OLD}", "msg_1"), (OLD, "msg_2"), (NEW, "msg_3")):
            resp = await client.post("/hooks", data=BODY, headers=_headers(secret, msg_id))
            assert resp.status == 204, (secret, out.getvalue())
        resp = await client.post("/hooks", data=BODY, headers=_headers(OTHER, "msg_4"))
        assert resp.status == 401
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["msg_1", "msg_2", "msg_3"]
    assert lines[3].startswith("refused:")


def test_verify_with_several_secrets_needs_one_to_match() -> None:
    verify(f"{NEW},{OLD}", _headers(OLD, "msg_1"), BODY.encode())
    with pytest.raises(WebhookVerificationError):
        verify(f"{NEW},{OLD}", _headers(OTHER, "msg_2"), BODY.encode())
    with pytest.raises(ValueError, match="secret #2 of 2"):
        verify(f"{NEW},whsec_", _headers(NEW, "msg_3"), BODY.encode())
