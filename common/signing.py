"""LiveKit's body signature, for webhooks and for our agents' reports alike.

The `Authorization` header (with or without `Bearer `) is a JWT, HS256, signed with the
LiveKit API secret and issued by the API key, whose `sha256` claim is the base64 SHA-256 of
the exact body bytes. LiveKit signs its webhooks so; our agents (and the sandbox) sign their
reports the same way, adding a room grant that names the call the report is about, so no
secret beyond LiveKit's is needed.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac

from livekit.api import AccessToken, TokenVerifier, VideoGrants
from livekit.api.access_token import Claims

TOKEN_TTL = datetime.timedelta(minutes=5)


class Unverified(Exception):
    """The signature does not hold; the message says why (never the token itself)."""


def body_digest(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def sign_body(body: bytes, api_key: str, api_secret: str, *, room: str | None = None) -> str:
    """The `Authorization` value for `body` (a bare JWT, as LiveKit sends it)."""
    token = AccessToken(api_key, api_secret).with_ttl(TOKEN_TTL).with_sha256(body_digest(body))
    if room is not None:
        token = token.with_identity(f"agent-{room}").with_grants(VideoGrants(room=room))
    return token.to_jwt()


def bearer_token(header: str) -> str:
    """The token of an Authorization header, with or without a `Bearer` scheme (any case)."""
    scheme, _, rest = header.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else header.strip()


def verify_body(verifier: TokenVerifier, header: str, body: bytes) -> Claims:
    """The claims of `header` if it is a valid token for exactly `body`; else Unverified."""
    token = bearer_token(header)
    if not token:
        raise Unverified("no Authorization header")
    try:
        claims = verifier.verify(token)
    except Exception as exc:  # PyJWT raises many types; any of them means "not verified"
        raise Unverified(f"token rejected ({type(exc).__name__})") from None
    if not isinstance(claims.sha256, str) or not claims.sha256:
        raise Unverified("token has no sha256 claim (or not a string)")
    try:
        expected = base64.b64decode(claims.sha256, validate=True)
    except ValueError:
        raise Unverified("sha256 claim is not base64") from None
    if not hmac.compare_digest(hashlib.sha256(body).digest(), expected):
        raise Unverified("body does not match the signed hash")
    return claims
