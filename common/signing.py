"""LiveKit's body signature, for webhooks and for our agents' reports alike.

The `Authorization` header (with or without `Bearer `) is a JWT, HS256, signed with the
LiveKit API secret and issued by the API key, whose `sha256` claim is the base64 SHA-256 of
the exact body bytes. LiveKit signs its webhooks so; our agents (and the sandbox) sign their
reports the same way, adding a room grant that names the call the report is about, so no
secret beyond LiveKit's is needed.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import functools
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from jwt.utils import base64url_decode, base64url_encode
from livekit.api import SIPGrants, VideoGrants
from livekit.api.access_token import DEFAULT_TTL, snake_to_lower_camel

TOKEN_TTL = datetime.timedelta(minutes=5)
# The clock skew allowed on `exp` and `nbf`, as livekit-api's TokenVerifier allows it.
LEEWAY = datetime.timedelta(minutes=1)
# How far ahead a token's `exp` may be. TokenVerifier takes any: a token with `exp` decades
# ahead, leaked once (a proxy's log, a captured request), could be replayed with its body
# for as long. LiveKit signs its webhooks for 5 minutes (livekit/protocol's webhook
# notifiers: SetValidFor(5 * time.Minute)), whatever its retries: an hour is generous.
WEBHOOK_MAX_AHEAD = datetime.timedelta(hours=1)
# Our agents (and the sandbox) sign each report attempt afresh for TOKEN_TTL: 5 minutes more
# leaves room for an agent's clock ahead of the server's.
REPORT_MAX_AHEAD = TOKEN_TTL + datetime.timedelta(minutes=5)
# That room, for the agent's clock ahead of ours, holds for its tokens' `nbf` (its "now") too:
# with LEEWAY alone, an agent host a minute and a second ahead had every report refused (401,
# which it does not retry), and the calls it talked on kept no answer, transcript or report.
REPORT_CLOCK_AHEAD = REPORT_MAX_AHEAD - TOKEN_TTL


class Unverified(Exception):
    """The signature does not hold; the message says why (never the token itself). `kind` is
    the reason without its figures (how far a clock is off): what refusals like it share, so
    that the log says them once a minute, not once per post."""

    def __init__(self, why: str, kind: str | None = None) -> None:
        super().__init__(why)
        self.kind = why if kind is None else kind


def body_digest(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


# The longest signer name (`sign_body`'s `signer`, a token's `name`) the server tells apart.
MAX_SIGNER_CHARS = 64


def sign_body(
    body: bytes,
    api_key: str,
    api_secret: str,
    *,
    room: str | None = None,
    signer: str | None = None,
) -> str:
    """The `Authorization` value for `body` (a bare JWT, as LiveKit sends it). `signer`: who
    signs it, as its token's `name` (an agent's host: whose clock its `nbf` is)."""
    name = (signer or "")[:MAX_SIGNER_CHARS]
    sign = _signer(api_key, api_secret)
    if room is None:
        return sign.token(TOKEN_TTL, name=name, sha256=body_digest(body))
    return sign.token(
        TOKEN_TTL,
        identity=f"agent-{room}",
        name=name,
        video=VideoGrants(room=room),
        sha256=body_digest(body),
    )


# The header PyJWT writes for HS256 (its keys sorted), base64url-encoded.
_HS256_HEADER = base64url_encode(b'{"alg":"HS256","typ":"JWT"}')


class TokenSigner:
    """Tokens signed with an API key and secret as livekit-api's `AccessToken.to_jwt` signs
    them: the same header and claims (each grant an object of its set fields in camelCase,
    the body's `sha256`, then `sub`, `iss`, `nbf` and `exp`: whole seconds), HS256.

    AccessToken turns its grants into claims with `dataclasses.asdict` and signs through
    PyJWT, which prepares (inspects) the secret for every token: ~150 µs a token, and the
    server signs one for each LiveKit request (two a call: the dispatch and the dial). Here
    the secret is prepared once (PyJWT's own preparation: a key it would refuse is refused
    here, at once) and the grants read field by field: ~15 µs. tests/unit/test_token_signer.py
    holds the two to the same tokens.
    """

    def __init__(
        self, api_key: str, api_secret: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be set")
        self._issuer = api_key
        self._secret = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(api_secret)
        self._clock = clock

    def token(
        self,
        ttl: datetime.timedelta,
        *,
        identity: str = "",
        name: str = "",
        video: VideoGrants | None = None,
        sip: SIPGrants | None = None,
        sha256: str = "",
    ) -> str:
        claims: dict[str, Any] = {}
        if name:
            claims["name"] = name
        if video is not None:
            claims["video"] = grant_claims(video)
        if sip is not None:
            claims["sip"] = grant_claims(sip)
        if sha256:
            claims["sha256"] = sha256
        now = self._clock()
        claims["sub"] = identity
        claims["iss"] = self._issuer
        claims["nbf"] = math.floor(now)
        claims["exp"] = math.floor(now + ttl.total_seconds())
        payload = json.dumps(claims, separators=(",", ":")).encode("utf-8")
        signing_input = _HS256_HEADER + b"." + base64url_encode(payload)
        signature = hmac.digest(self._secret, signing_input, "sha256")
        return (signing_input + b"." + base64url_encode(signature)).decode("ascii")

    def auth_header(
        self, grants: VideoGrants | None, sip: SIPGrants | None = None
    ) -> dict[str, str]:
        """livekit-api's `Service._auth_header` (the token of one request to LiveKit's API,
        for livekit-api's default TTL), signed here."""
        return {"authorization": f"Bearer {self.token(DEFAULT_TTL, video=grants, sip=sip)}"}


@functools.lru_cache(maxsize=4)
def _signer(api_key: str, api_secret: str) -> TokenSigner:
    return TokenSigner(api_key, api_secret)


@functools.cache
def _claim_names(kind: type) -> tuple[tuple[str, str], ...]:
    return tuple((f.name, snake_to_lower_camel(f.name)) for f in dataclasses.fields(kind))


def grant_claims(value: Any) -> Any:
    """A grant as livekit-api's `Claims.asdict` writes it: a dataclass as an object of its
    fields that are neither None nor "" (camelCase names), nested ones alike."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            camel: grant_claims(field)
            for name, camel in _claim_names(type(value))
            if (field := getattr(value, name)) is not None and field != ""
        }
    if isinstance(value, list | tuple):
        return [grant_claims(item) for item in value]
    if isinstance(value, dict):
        return {key: grant_claims(item) for key, item in value.items()}
    return value


def bearer_token(header: str) -> str:
    """The token of an Authorization header, with or without a `Bearer` scheme (any case)."""
    scheme, _, rest = header.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else header.strip()


@dataclass(frozen=True)
class SignedBody:
    """What a valid signature says besides the body's hash: the room its grant names, if any."""

    room: object = None


@dataclass(frozen=True)
class SignedToken:
    """A token whose signature, issuer and times hold, before the body it signs is read:
    the SHA-256 it signs, and the room its grant names (if any)."""

    digest: bytes
    room: object = None
    # When the signer signed it, by the signer's clock (its `nbf`, else `iat`; None: neither,
    # or not a number): set against this server's clock, how far the two clocks are apart.
    signed_at: float | None = None
    # Who signed it, by its `name` (an agent's host; None: not said, as by LiveKit): whose
    # clock `signed_at` is.
    signer: str | None = None

    def covers(self, body: bytes) -> SignedBody:
        """What the token says of `body` if it signs exactly `body`; else Unverified."""
        if not hmac.compare_digest(hashlib.sha256(body).digest(), self.digest):
            raise Unverified("body does not match the signed hash")
        return SignedBody(room=self.room)


class _PreparedHS256(HMACAlgorithm):
    """HS256 that prepares our one secret once.

    PyJWT prepares the key on every check: it makes sure an HMAC secret is not a PEM, SSH or
    DER key, nor a JWK given as JSON (by parsing it, and raising inside, each time), which was
    a third of a check. The secret does not change, so neither does the verdict; any other
    key is prepared as PyJWT always does.
    """

    def __init__(self, secret: str) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._secret = secret
        self._prepared = super().prepare_key(secret)

    def prepare_key(self, key: str | bytes) -> bytes:
        return self._prepared if key == self._secret else super().prepare_key(key)


# A token segment as PyJWT accepts it: the base64url alphabet, then at most two '='.
_SEGMENT = re.compile(rb"([A-Za-z0-9_-]*)(={0,2})")


def decode_segment(segment: bytes, name: str) -> bytes:
    """PyJWS._decode_base64url_segment's verdict, with the alphabet checked by one regex.

    PyJWT checks each character of the token in a Python generator (GHSA-hxm8-2xgr-2p9m):
    about 15 µs of a 36 µs check of our tokens, 13 checks per call. The rules are the same:
    at most two '=', only where the length is a multiple of 4; no other character outside
    the alphabet; no length of 1 mod 4; the one canonical encoding of the bytes it decodes
    to. tests/unit/test_signing.py holds the two to the same verdict on random segments.
    """
    match = _SEGMENT.fullmatch(segment)
    if match is None:
        raise DecodeError(f"Invalid {name} padding")
    stripped, padding = match.group(1), match.group(2)
    if (padding and len(segment) % 4 != 0) or len(stripped) % 4 == 1:
        raise DecodeError(f"Invalid {name} padding")
    try:
        decoded = base64url_decode(stripped)
    except (TypeError, binascii.Error) as err:
        raise DecodeError(f"Invalid {name} padding") from err
    if base64url_encode(decoded) != stripped:
        raise DecodeError(f"Invalid {name} padding")
    return decoded


class BodyVerifier:
    """Checks `Authorization` headers against our API key and secret.

    The token check is livekit-api's `TokenVerifier.verify` (PyJWT: HS256 only, signature,
    issuer = our API key, `exp` required and checked, `nbf`, a minute of leeway), made with
    PyJWT directly: TokenVerifier also turns every grant type into claims objects, which cost
    a third of a check, and we read one claim besides the body hash (the video grant's room).
    Beyond TokenVerifier, an `exp` more than `max_ahead` from now is refused: no signer of
    ours makes one (WEBHOOK_MAX_AHEAD, REPORT_MAX_AHEAD).
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        leeway: datetime.timedelta = LEEWAY,
        *,
        max_ahead: datetime.timedelta = WEBHOOK_MAX_AHEAD,
        not_before_leeway: datetime.timedelta | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret must be set")
        self._api_key = api_key
        self._api_secret = api_secret
        self._leeway_s = leeway.total_seconds()
        self._max_ahead = max_ahead
        # How far ahead of ours the signer's clock may run (`nbf`, `iat`); None: `leeway`.
        ahead = leeway if not_before_leeway is None else not_before_leeway
        self._not_before_leeway_s = max(ahead.total_seconds(), self._leeway_s)
        self._clock = clock
        # PyJWT's own decode, with HS256 swapped for one that prepared our secret already.
        self._jwt = jwt.PyJWT()
        self._jwt._jws.unregister_algorithm("HS256")
        try:
            self._jwt._jws.register_algorithm("HS256", _PreparedHS256(api_secret))
        except jwt.InvalidKeyError as exc:  # no token could ever be verified with it
            raise ValueError(f"the API secret cannot be an HMAC secret: {exc}") from None
        if hasattr(PyJWS, "_decode_base64url_segment"):  # a PyJWT with the per-character check
            self._jwt._jws._decode_base64url_segment = decode_segment  # type: ignore[method-assign]

    def verify(self, header: str, body: bytes) -> SignedBody:
        """What `header` says if it is a valid token for exactly `body`; else Unverified."""
        return self.verify_token(header).covers(body)

    def verify_token(self, header: str) -> SignedToken:
        """What `header` says if it is a valid token, for the body it signs to be checked
        once read (`SignedToken.covers`); else Unverified. A route checks it before reading
        the body: anyone may post to one, and a forged post's body (up to 1 MiB each) was
        read and held first, the server growing by as much per connection."""
        token = bearer_token(header)
        if not token:
            raise Unverified("no Authorization header")
        own_not_before = self._not_before_leeway_s > self._leeway_s  # checked below
        try:
            claims = self._jwt.decode(
                token,
                key=self._api_secret,
                issuer=self._api_key,
                algorithms=["HS256"],
                leeway=self._leeway_s,
                options={
                    "verify_signature": True,
                    "require": ["exp"],
                    "verify_nbf": not own_not_before,
                    "verify_iat": not own_not_before,
                },
            )
        except Exception as exc:  # PyJWT raises many types; any of them means "not verified"
            kind = f"token rejected ({type(exc).__name__})"
            raise Unverified(f"token rejected ({self._why(exc, token)})", kind) from None
        if own_not_before:
            self._check_not_before(claims)
        # PyJWT checked that int() takes it, as it reads it
        if int(claims["exp"]) - self._clock() > self._max_ahead.total_seconds():
            raise Unverified(
                f"token expires more than {_duration(self._max_ahead)} ahead (its exp is too"
                " far in the future for any signer of ours)"
            )
        digest = claims.get("sha256")
        if not isinstance(digest, str) or not digest:
            raise Unverified("token has no sha256 claim (or not a string)")
        try:
            expected = base64.b64decode(digest, validate=True)
        except ValueError:
            raise Unverified("sha256 claim is not base64") from None
        video = claims.get("video") or {}
        if not isinstance(video, dict):
            raise Unverified("token's video grant is not an object")
        name = claims.get("name")
        signer = name[:MAX_SIGNER_CHARS] if isinstance(name, str) and name else None
        return SignedToken(
            digest=expected, room=video.get("room"), signed_at=_signed_at(claims), signer=signer
        )

    def _why(self, exc: Exception, token: str) -> str:
        """PyJWT's refusal in the words an operator acts on: the setting to look at, or the
        clocks. The bare class name ("InvalidSignatureError") named neither; a key rotated on
        one side only, or a clock an hour off, refused every webhook or report alike."""
        name = type(exc).__name__
        if isinstance(exc, jwt.InvalidSignatureError):
            return f"{name}: not signed with this server's LIVEKIT_API_SECRET"
        if isinstance(exc, jwt.InvalidIssuerError):
            return f"{name}: issued by another API key than this server's LIVEKIT_API_KEY"
        if isinstance(exc, jwt.ExpiredSignatureError | jwt.ImmatureSignatureError):
            # its signature held (PyJWT checks it first): its claims are the signer's
            try:
                claims = self._jwt.decode(token, options={"verify_signature": False})
                claim = "exp" if isinstance(exc, jwt.ExpiredSignatureError) else "nbf"
                claim = claim if claim in claims else "iat"  # PyJWT's "not yet" is either
                at = int(claims[claim])
            except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
                return name
            off = at - self._clock()
            where = f"{-off:.0f} s behind" if off < 0 else f"{off:.0f} s ahead of"
            return (
                f"{name}: its {claim} is {where} this server's clock, over the"
                f" {_duration(datetime.timedelta(seconds=self._leeway_s))} allowed:"
                " is the signer's clock, or this server's, wrong?"
            )
        return name

    def _check_not_before(self, claims: dict[str, Any]) -> None:
        """`nbf` and `iat`, as PyJWT checks them, with `not_before_leeway` for a signer's
        clock ahead of ours."""
        for claim in ("nbf", "iat"):
            if claim not in claims:
                continue
            try:
                at = int(claims[claim])
            except (ValueError, TypeError, OverflowError):
                raise Unverified(f"token rejected ({claim} is not an integer)") from None
            ahead = at - self._clock()
            if ahead > self._not_before_leeway_s:
                allowed = _duration(datetime.timedelta(seconds=self._not_before_leeway_s))
                raise Unverified(
                    f"token not valid yet: its {claim} is {ahead:.0f} s ahead of this server's"
                    f" clock (over {allowed}: is the signer's clock right?)",
                    kind=f"token not valid yet ({claim} ahead)",
                )


def _signed_at(claims: dict[str, Any]) -> float | None:
    """When a verified token was signed, by its signer's clock: its `nbf` (LiveKit's and our
    signers' "now"), else its `iat`; None when it has neither as a number."""
    for claim in ("nbf", "iat"):
        value = claims.get(claim)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if math.isfinite(value) else None
    return None


def _duration(span: datetime.timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
