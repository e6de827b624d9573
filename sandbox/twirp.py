"""The Twirp wire protocol and the token checks, as LiveKit's server speaks them.

Read from livekit-server (``pkg/service/auth.go``, ``pkg/service/server.go``) and twirp v8:

- Requests are ``POST /twirp/livekit.<Service>/<Method>`` with an ``application/protobuf`` or
  ``application/json`` body; the answer uses the same encoding. JSON answers use the proto field
  names and include unpopulated fields, like twirp's default JSON marshaller; JSON requests may use
  either field-name style and unknown fields are ignored.
- Errors are always JSON ``{"code": ..., "msg": ..., "meta": {...}}`` with the HTTP status twirp
  assigns to the code.
- ``Authorization: Bearer <JWT>`` signed HS256 with the API secret, ``iss`` = API key. A malformed
  header or a bad token is ``401 unauthenticated``. A missing token, or a valid one without the
  method's grant, is also ``401 unauthenticated`` with msg ``permissions denied``: that is what
  livekit-server's ``twirpAuthError`` returns (it wraps every ``Ensure*Permission`` failure in
  ``twirp.Unauthenticated``), so the sandbox does the same.
"""

from __future__ import annotations

import json
from typing import Final, Literal

import jwt
from aiohttp import web
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from google.protobuf.message import DecodeError, Message
from livekit.api.access_token import Claims, TokenVerifier

Encoding = Literal["protobuf", "json"]

JSON_CONTENT_TYPE: Final = "application/json"
PROTOBUF_CONTENT_TYPE: Final = "application/protobuf"
BEARER_PREFIX: Final = "Bearer "

# twirp's code -> HTTP status table (twirp v8 ServerHTTPStatusFromErrorCode).
_HTTP_STATUS: Final[dict[str, int]] = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

PERMISSIONS_DENIED: Final = "permissions denied"


class TwirpError(Exception):
    """A Twirp error answer: ``code`` is one of twirp's error codes."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self.code, 500)

    def to_response(self) -> web.Response:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return web.Response(
            status=self.http_status, text=json.dumps(body), content_type=JSON_CONTENT_TYPE
        )


def encoding_for(content_type_header: str | None) -> Encoding:
    """The request's body encoding, or ``bad_route`` like twirp for any other content type."""
    raw = (content_type_header or "").split(";", 1)[0].strip().lower()
    if raw == PROTOBUF_CONTENT_TYPE:
        return "protobuf"
    if raw == JSON_CONTENT_TYPE:
        return "json"
    raise TwirpError("bad_route", f"unexpected Content-Type: {raw!r}")


def decode_body(body: bytes, encoding: Encoding, message: Message) -> None:
    """Parse ``body`` into ``message`` or raise ``malformed``."""
    try:
        if encoding == "json":
            Parse(body.decode("utf-8"), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (ParseError, DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise TwirpError(
            "malformed", f"the {encoding} request could not be decoded: {type(exc).__name__}"
        ) from None


def encode_response(message: Message, encoding: Encoding) -> web.Response:
    if encoding == "json":
        text = MessageToJson(
            message,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
            indent=None,
        )
        return web.Response(status=200, text=text, content_type=JSON_CONTENT_TYPE)
    return web.Response(
        status=200, body=message.SerializeToString(), content_type=PROTOBUF_CONTENT_TYPE
    )


def authenticate(header: str | None, verifier: TokenVerifier) -> Claims | None:
    """The verified claims of the request's token; None when there is no token at all.

    Like livekit-server's auth middleware, a missing token is not rejected here: the method's
    grant check then fails with ``permissions denied``.
    """
    if not header:
        return None
    if not header.startswith(BEARER_PREFIX):
        raise TwirpError(
            "unauthenticated", "invalid authorization header. Must start with " + BEARER_PREFIX
        )
    token = header[len(BEARER_PREFIX) :].strip()
    try:
        return verifier.verify(token)
    except jwt.InvalidIssuerError:
        raise TwirpError("unauthenticated", "invalid API key") from None
    except Exception:  # any decoding/verification failure; never echo the token
        raise TwirpError("unauthenticated", "invalid authorization token") from None


def _denied() -> TwirpError:
    return TwirpError("unauthenticated", PERMISSIONS_DENIED)


def require_room_admin(claims: Claims | None, room: str) -> None:
    """``video.roomAdmin`` for exactly this room (LiveKit's EnsureAdminPermission)."""
    video = claims.video if claims else None
    if video is None or not video.room_admin or video.room != room:
        raise _denied()


def require_room_create(claims: Claims | None) -> None:
    video = claims.video if claims else None
    if video is None or not video.room_create:
        raise _denied()


def require_room_list(claims: Claims | None) -> None:
    video = claims.video if claims else None
    if video is None or not video.room_list:
        raise _denied()


def require_sip_call(claims: Claims | None) -> None:
    sip = claims.sip if claims else None
    if sip is None or not sip.call:
        raise _denied()
