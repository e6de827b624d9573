"""Webhook signatures: ours must verify with the standardwebhooks package, and nothing else."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from common.notify.deliveries import _origin
from common.notify.signing import parse_secret, parse_secrets, sign, verify

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
BODY = '{"event":"call.completed","call_id":"c_1","name":"Zoë"}'.encode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# parse_secret


def test_parse_secret_accepts_a_valid_secret() -> None:
    assert parse_secret(SECRET) == SECRET
    assert parse_secret(f"  {SECRET}\n") == SECRET


def test_parse_secret_accepts_unpadded_base64() -> None:
    unpadded = "whsec_" + base64.b64encode(bytes(range(25))).decode().rstrip("=")
    assert parse_secret(unpadded) == unpadded


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must start with 'whsec_'"),
        (base64.b64encode(bytes(32)).decode(), "must start with 'whsec_'"),
        ("whsec_", "at least 24 bytes, got 0"),
        ("whsec_" + base64.b64encode(bytes(23)).decode(), "at least 24 bytes, got 23"),
        ("whsec_not base64!!", "not valid base64"),
        ("whsec_" + "A" * 33, "not valid base64"),  # 33 chars: impossible length
    ],
)
def test_parse_secret_refuses(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_secret(value)
    message = str(caught.value)
    assert "CALLS_WEBHOOK_SECRET" in message
    assert "\n" not in message


def test_parse_secret_never_echoes_the_secret() -> None:
    short = "whsec_" + base64.b64encode(b"short-secret").decode()
    with pytest.raises(ValueError) as caught:
        parse_secret(short)
    assert short.removeprefix("whsec_") not in str(caught.value)


# ---------------------------------------------------------------------------------------------
# sign


def test_sign_returns_the_three_headers() -> None:
    timestamp = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    headers = sign(SECRET, MSG_ID, timestamp, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert all(isinstance(value, str) for value in headers.values())
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == str(int(timestamp.timestamp()))  # whole seconds
    version, signature = headers["webhook-signature"].split(",")
    assert version == "v1"
    assert len(base64.b64decode(signature)) == 32  # HMAC-SHA256


def test_sign_matches_the_spec_test_vector() -> None:
    # The example from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    timestamp = datetime.fromtimestamp(1614265330, tz=UTC)
    headers = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp, body)
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_converts_non_utc_timestamps() -> None:
    # standardwebhooks itself would replace the zone and sign 2 hours off.
    cest = timezone(timedelta(hours=2))
    local = datetime(2026, 6, 1, 14, 0, tzinfo=cest)
    utc = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert sign(SECRET, MSG_ID, local, BODY) == sign(SECRET, MSG_ID, utc, BODY)


def test_sign_refuses_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        sign(SECRET, MSG_ID, datetime(2026, 1, 1), BODY)


def test_sign_refuses_non_utf8_bodies() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        sign(SECRET, MSG_ID, now(), b"\xff\xfe")


@pytest.mark.parametrize("msg_id", ["", "msg 1", "msg\r\nx-injected: 1", "msg_é"])
def test_sign_refuses_bad_message_ids(msg_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        sign(SECRET, msg_id, now(), BODY)


def test_sign_refuses_a_bad_secret() -> None:
    with pytest.raises(ValueError, match="CALLS_WEBHOOK_SECRET"):
        sign("whsec_c2hvcnQ=", MSG_ID, now(), BODY)


# ---------------------------------------------------------------------------------------------
# verify: the package's own Webhook.verify, and ours


def test_package_verify_accepts_our_signature() -> None:
    headers = sign(SECRET, MSG_ID, now(), BODY)
    assert Webhook(SECRET).verify(BODY, headers) == {
        "event": "call.completed",
        "call_id": "c_1",
        "name": "Zoë",
    }


def test_our_verify_accepts_our_signature() -> None:
    headers = sign(SECRET, MSG_ID, now(), BODY)
    verify(SECRET, headers, BODY)
    verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY)  # header names: any case


def test_non_json_bodies_are_signed_too() -> None:
    body = b"plain text, not JSON"
    verify(SECRET, sign(SECRET, MSG_ID, now(), body), body)


def tamper(headers: dict[str, str], **changes: str) -> dict[str, str]:
    return {**headers, **{k.replace("_", "-"): v for k, v in changes.items()}}


@pytest.mark.parametrize("check", ["package", "ours"])
@pytest.mark.parametrize(
    "case", ["body", "id", "timestamp", "secret", "missing-signature", "other-version"]
)
def test_tampering_fails_verification(check: str, case: str) -> None:
    signed_at = now()
    headers = sign(SECRET, MSG_ID, signed_at, BODY)
    body, secret = BODY, SECRET
    if case == "body":
        body = BODY.replace(b"completed", b"failed")
    elif case == "id":
        headers = tamper(headers, webhook_id="msg_other")
    elif case == "timestamp":
        headers = tamper(headers, webhook_timestamp=str(int(signed_at.timestamp()) - 1))
    elif case == "secret":
        secret = OTHER_SECRET
    elif case == "missing-signature":
        del headers["webhook-signature"]
    else:
        version_2 = headers["webhook-signature"].replace("v1,", "v2,")
        headers = tamper(headers, webhook_signature=version_2)
    with pytest.raises(WebhookVerificationError):
        if check == "package":
            Webhook(secret).verify(body, headers)
        else:
            verify(secret, headers, body)


@pytest.mark.parametrize("check", ["package", "ours"])
def test_expired_timestamp_fails_verification(check: str) -> None:
    headers = sign(SECRET, MSG_ID, now() - timedelta(minutes=5, seconds=30), BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        if check == "package":
            Webhook(SECRET).verify(BODY, headers)
        else:
            verify(SECRET, headers, BODY)


def test_future_timestamp_fails_verification() -> None:
    headers = sign(SECRET, MSG_ID, now() + timedelta(minutes=6), BODY)
    with pytest.raises(WebhookVerificationError, match="too new"):
        verify(SECRET, headers, BODY)


def test_recent_timestamp_within_tolerance_verifies() -> None:
    headers = sign(SECRET, MSG_ID, now() - timedelta(minutes=4), BODY)
    verify(SECRET, headers, BODY)


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,abc,def", "v1,%%%not-base64%%%", ""],
)
def test_malformed_signature_headers_fail_cleanly(signature: str) -> None:
    headers = tamper(sign(SECRET, MSG_ID, now(), BODY), webhook_signature=signature)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, BODY)


def test_non_utf8_body_fails_verification_cleanly() -> None:
    headers = sign(SECRET, MSG_ID, now(), BODY)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, b"\xff" + BODY)


def test_several_signatures_one_valid_verifies() -> None:
    # Receivers accept any matching v1 signature: this is how secret rotation works.
    old = sign(OTHER_SECRET, MSG_ID, now(), BODY)["webhook-signature"]
    headers = sign(SECRET, MSG_ID, now(), BODY)
    headers["webhook-signature"] = f"{old} {headers['webhook-signature']}"
    verify(SECRET, headers, BODY)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://[::1]:8793/hook", "http://[::1]:8793"),
        ("https://Hooks.Example.com/a?b", "https://hooks.example.com:443"),
        ("http://127.0.0.1/x", "http://127.0.0.1:80"),
    ],
)
def test_a_receiver_is_named_as_its_url_would_be(url: str, origin: str) -> None:
    """Its logs and its per-receiver limit: an IPv6 host in brackets (`http://::1:8793` was
    no URL)."""
    assert _origin(url) == origin


# ---------------------------------------------------------------------------------------------
# rotation: several secrets


def test_during_a_rotation_each_delivery_verifies_with_the_new_and_the_old_secret() -> None:
    """One secret could not be rotated: a new one broke every receiver until each had it,
    and an old one kept could not be retired. With both, each receiver accepts either."""
    both = parse_secrets(f" {OTHER_SECRET} , {SECRET}\n")
    assert both == f"{OTHER_SECRET},{SECRET}"
    headers = sign(both, MSG_ID, now(), BODY)
    assert [part[:3] for part in headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]
    for receivers_secret in (SECRET, OTHER_SECRET):
        verify(receivers_secret, headers, BODY)
        Webhook(receivers_secret).verify(BODY, headers)
    third = "whsec_" + base64.b64encode(bytes(range(2, 34))).decode()
    with pytest.raises(WebhookVerificationError):
        verify(third, headers, BODY)
    assert sign(SECRET, MSG_ID, now(), BODY)["webhook-signature"].count("v1,") == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (f"{SECRET},", "secret #2 of 2 is empty"),
        (f"{SECRET},,{OTHER_SECRET}", "secret #2 of 3 is empty"),
        (
            f"{SECRET},whsec_{base64.b64encode(bytes(10)).decode()}",
            "secret #2 of 2 must decode to at least 24 bytes, got 10",
        ),
        (f"{SECRET},whsec_short", "secret #2 of 2 is not valid base64"),
        (f"{SECRET},{base64.b64encode(bytes(32)).decode()}", "secret #2 of 2 must start with"),
        (f"{SECRET}, {SECRET}", "the same secret twice"),
    ],
)
def test_a_list_of_secrets_names_the_one_that_is_wrong(value: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_secrets(value)
    assert SECRET.removeprefix("whsec_") not in str(caught.value)
