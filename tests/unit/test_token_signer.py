"""TokenSigner (common/signing.py) makes the very tokens livekit-api's AccessToken makes, and
the app's LiveKit client signs every request's token with it."""

from __future__ import annotations

import datetime
import types
from typing import Any

import jwt
import pytest
from aiohttp import web
from livekit.api import AccessToken, SIPGrants, TokenVerifier, VideoGrants
from livekit.api import access_token as livekit_tokens
from livekit.protocol.agent_dispatch import CreateAgentDispatchRequest
from livekit.protocol.sip import CreateSIPParticipantRequest

from common.livekit.client import create_client, create_session
from common.settings import settings_from_env
from common.signing import TOKEN_TTL, TokenSigner, body_digest, sign_body

KEY, SECRET = "APIsigner", "signer-secret-" + "s" * 40
NOW = 1_796_565_340.73  # a moment with a fraction: both must cut it the same way


class _Frozen(datetime.datetime):
    @classmethod
    def now(cls, tz: datetime.tzinfo | None = None) -> _Frozen:
        return cls.fromtimestamp(NOW, tz)


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """livekit-api's clock stopped at NOW (its module's own `datetime` name only)."""
    clock = types.SimpleNamespace(
        datetime=_Frozen, timezone=datetime.timezone, timedelta=datetime.timedelta
    )
    monkeypatch.setattr(livekit_tokens, "datetime", clock)


def livekit_token(
    ttl: datetime.timedelta,
    *,
    identity: str = "",
    video: VideoGrants | None = None,
    sip: SIPGrants | None = None,
    sha256: str = "",
) -> str:
    token = AccessToken(KEY, SECRET).with_ttl(ttl).with_identity(identity)
    if video is not None:
        token = token.with_grants(video)
    if sip is not None:
        token = token.with_sip_grants(sip)
    if sha256:
        token = token.with_sha256(sha256)
    return token.to_jwt()


GRANTS: list[dict[str, Any]] = [
    {},
    {"video": VideoGrants(room_admin=True, room="call-0a1b2c")},
    {"video": VideoGrants(), "sip": SIPGrants(call=True)},
    {"video": VideoGrants(room_list=True)},
    {"video": VideoGrants(room="r", can_publish_sources=["microphone", "camera"], hidden=True)},
    {"video": VideoGrants(room="ünïcode ☎", room_join=True), "identity": "agent-ünï"},
    {"sip": SIPGrants(admin=True, call=False)},
    {"video": VideoGrants(room="call-1"), "identity": "agent-call-1", "sha256": "abc="},
    {"sha256": body_digest(b"{}")},
]


@pytest.mark.parametrize("grants", GRANTS)
@pytest.mark.parametrize("ttl", [datetime.timedelta(hours=6), TOKEN_TTL])
def test_the_same_token_as_livekit_api(
    frozen: None, grants: dict[str, Any], ttl: datetime.timedelta
) -> None:
    ours = TokenSigner(KEY, SECRET, clock=lambda: NOW).token(ttl, **grants)
    assert ours == livekit_token(ttl, **grants)
    claims = TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(days=10_000))
    assert claims.verify(ours).identity == grants.get("identity", "")


def test_the_request_header_is_livekit_apis(frozen: None) -> None:
    signer = TokenSigner(KEY, SECRET, clock=lambda: NOW)
    grant = VideoGrants(room_admin=True, room="call-9")
    tok = AccessToken(KEY, SECRET).with_grants(grant).to_jwt()
    assert signer.auth_header(grant) == {"authorization": f"Bearer {tok}"}


def test_sign_body_is_unchanged(frozen: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def stopped(key: str, secret: str) -> TokenSigner:
        return TokenSigner(key, secret, clock=lambda: NOW)

    monkeypatch.setattr("common.signing._signer", stopped)
    body = b'{"kind": "turn", "text": "hola"}'
    digest = body_digest(body)
    assert sign_body(body, KEY, SECRET) == livekit_token(TOKEN_TTL, sha256=digest)
    assert sign_body(body, KEY, SECRET, room="call-7") == livekit_token(
        TOKEN_TTL, identity="agent-call-7", video=VideoGrants(room="call-7"), sha256=digest
    )


@pytest.mark.parametrize(("key", "secret"), [("", SECRET), (KEY, "")])
def test_key_and_secret_are_required(key: str, secret: str) -> None:
    with pytest.raises(ValueError, match="must be set"):
        TokenSigner(key, secret)


def test_a_secret_pyjwt_refuses_is_refused_at_once() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
    with pytest.raises(jwt.InvalidKeyError):
        AccessToken(KEY, pem).to_jwt()
    with pytest.raises(jwt.InvalidKeyError):
        TokenSigner(KEY, pem)


async def test_the_apps_livekit_requests_carry_the_signers_tokens(aiohttp_server: Any) -> None:
    """Through the app's own client (create_client on create_session): each request's token
    verifies with livekit-api's TokenVerifier and carries the grant livekit-api gives it."""
    seen: dict[str, str] = {}

    async def twirp(request: web.Request) -> web.Response:
        seen[request.match_info["method"]] = request.headers["Authorization"]
        return web.Response(body=b"", content_type="application/protobuf")

    app = web.Application()
    app.router.add_post("/twirp/livekit.{service}/{method}", twirp)
    server = await aiohttp_server(app, host="127.0.0.1")
    settings = settings_from_env(
        {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET, "SIP_OUTBOUND_TRUNK_ID": "ST_x"}
    )
    async with create_session() as session:
        lkapi = create_client(settings, str(server.make_url("")), session)
        await lkapi.agent_dispatch.create_dispatch(
            CreateAgentDispatchRequest(agent_name="a", room="call-5")
        )
        await lkapi.sip.create_sip_participant(
            CreateSIPParticipantRequest(sip_trunk_id="ST_x", sip_call_to="+1", room_name="call-5")
        )
        services = [svc for svc in vars(lkapi).values() if hasattr(svc, "_auth_header")]
        signers = {type(getattr(svc._auth_header, "__self__", None)) for svc in services}
    assert signers == {TokenSigner}
    verifier = TokenVerifier(KEY, SECRET)
    dispatch = verifier.verify(seen["CreateDispatch"].removeprefix("Bearer "))
    assert dispatch.video is not None
    assert (dispatch.video.room_admin, dispatch.video.room) == (True, "call-5")
    dial = verifier.verify(seen["CreateSIPParticipant"].removeprefix("Bearer "))
    assert dial.sip is not None and dial.sip.call
