"""Standard Webhooks signatures for customer webhooks (https://www.standardwebhooks.com).

The `standardwebhooks` package does the HMAC; this module only guards its sharp edges:

* `Webhook.sign` takes the body as `str` and signs `body.encode()`, so the body must be
  UTF-8 and is decoded strictly here: the bytes signed are then exactly the bytes sent.
* `Webhook.sign` does `timestamp.replace(tzinfo=utc)`, which silently misreads a naive local
  time or an aware non-UTC time; timestamps are required to be aware and converted first.
* `Webhook(...)` decodes the secret leniently (non-base64 characters are dropped), so a typo
  would still "work"; `parse_secret` validates strictly and demands a usable key length.
* `Webhook.verify` lets `ValueError`s escape on malformed headers; `verify` turns every
  failure into `WebhookVerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = [
    "MIN_SECRET_BYTES",
    "SECRET_ENV",
    "SECRET_PREFIX",
    "WebhookVerificationError",
    "parse_secret",
    "parse_secrets",
    "sign",
    "verify",
]

SECRET_ENV = "CALLS_WEBHOOK_SECRET"  # noqa: S105  (a variable name, not a secret)
SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix)
MIN_SECRET_BYTES = 24


def parse_secret(value: str) -> str:
    """`value` as a signing secret (`whsec_` + base64 of >= 24 bytes), or ValueError.

    Surrounding whitespace (a trailing newline from a secrets file) is dropped; anything
    else malformed is refused rather than silently repaired, as the package would.
    """
    secret = value.strip()
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"{SECRET_ENV} must start with {SECRET_PREFIX!r} followed by base64")
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{SECRET_ENV} is not valid base64 after {SECRET_PREFIX!r}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{SECRET_ENV} must decode to at least {MIN_SECRET_BYTES} bytes, got {len(key)}"
        )
    return secret


def parse_secrets(value: str) -> str:
    """`value` as the signing secrets, comma-separated (`whsec_new,whsec_old` while receivers
    move to a new one: every delivery is signed with each, and a receiver that checks either
    accepts it), each as `parse_secret` takes it; ValueError naming the one that is not."""
    parts = [part.strip() for part in value.split(",")]
    if len(parts) == 1:
        return parse_secret(value)
    secrets = []
    for number, part in enumerate(parts, 1):
        if not part:
            raise ValueError(f"{SECRET_ENV}'s secret #{number} of {len(parts)} is empty")
        try:
            secrets.append(parse_secret(part))
        except ValueError as exc:
            said = str(exc).removeprefix(SECRET_ENV)  # " must start with ..."
            raise ValueError(f"{SECRET_ENV}'s secret #{number} of {len(parts)}{said}") from None
    if len(set(secrets)) < len(secrets):
        raise ValueError(f"{SECRET_ENV} names the same secret twice")
    return ",".join(secrets)


def _check_msg_id(msg_id: str) -> None:
    """The id travels in a header: printable ASCII without spaces, so it cannot split one."""
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError("webhook message id must be non-empty printable ASCII without spaces")


def sign(secret: str, msg_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The `webhook-id`, `webhook-timestamp` and `webhook-signature` headers for `body`;
    `secret` may be several, comma-separated (`parse_secrets`): one `v1,` signature each,
    space-separated, as the spec lets a sender rotate its secret.

    Send `body` exactly as passed (e.g. `data=body`, never `json=`), or the signature breaks.
    `timestamp` must be timezone-aware; it is sent in whole seconds, as the spec says.
    """
    if timestamp.tzinfo is None or timestamp.utcoffset() is None:
        raise ValueError("webhook timestamp must be timezone-aware")
    _check_msg_id(msg_id)
    try:
        text = body.decode("utf-8")  # strict: re-encoding gives back exactly `body`
    except UnicodeDecodeError:
        raise ValueError("webhook body must be UTF-8 (Standard Webhooks signs text)") from None
    utc = timestamp.astimezone(UTC)
    signature = " ".join(
        Webhook(one).sign(msg_id, utc, text) for one in parse_secrets(secret).split(",")
    )
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(math.floor(utc.timestamp())),
        "webhook-signature": signature,
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check a delivery as a receiver would; raise `WebhookVerificationError` if it fails.
    `secret` may be several, comma-separated, as CALLS_WEBHOOK_SECRET during a rotation
    (`parse_secrets`): a signature by any of them is enough.

    Includes the package's +-5 minute timestamp tolerance (replay protection).
    """
    failure: WebhookVerificationError | None = None
    for one in parse_secrets(secret).split(","):
        try:
            Webhook(one).verify(body, dict(headers.items()), json_parse=False)
        except WebhookVerificationError as exc:
            failure = exc
        except ValueError as exc:  # malformed signature list, bad base64, non-UTF-8 body
            raise WebhookVerificationError(f"malformed webhook: {exc}") from exc
        else:
            return
    assert failure is not None  # noqa: S101 - one secret at least: each failed
    raise failure
