"""README's standard-library check of a customer webhook (`verified`) is False for a
`webhook-timestamp` of thousands of digits, as for any other malformed header: it raised
ValueError ("Exceeds the limit (4300 digits) for integer string conversion") from `int()`, a
500 and a traceback in a receiver built from it for what anyone may post to it (a header of
4,301 digits fits aiohttp's 8 KiB), where the package says WebhookVerificationError."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from common.notify.signing import sign
from tests.test_docs import _readme_stdlib_verified

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
BODY = b'{"type":"call.ended"}'


@pytest.mark.parametrize("digits", [4301, 8000])
def test_a_timestamp_of_thousands_of_digits_is_false_not_an_error(digits: int) -> None:
    verified = _readme_stdlib_verified()
    good = sign(SECRET, "msg_call-1_1", datetime.now(UTC), BODY)
    assert verified(SECRET, good, BODY)  # what the server sends still verifies
    headers = {**good, "webhook-timestamp": "9" * digits}
    with pytest.raises(WebhookVerificationError):  # the package it is "the same check" as
        Webhook(SECRET).verify(BODY, headers)
    assert verified(SECRET, headers, BODY) is False
