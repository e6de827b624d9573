"""The body signature check (common/signing.py) accepts exactly what livekit-api's
TokenVerifier plus the body-hash check accepted, and says which room a token covers."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError
from livekit.api import TokenVerifier

from common.signing import (
    REPORT_CLOCK_AHEAD,
    REPORT_MAX_AHEAD,
    TOKEN_TTL,
    BodyVerifier,
    SignedBody,
    Unverified,
    body_digest,
    decode_segment,
    sign_body,
)

KEY, SECRET = "APIsigning", "signing-secret-" + "s" * 64  # long enough for HS512 too
BODY = b'{"event": "room_finished"}'


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": KEY, "sub": "", "nbf": now, "exp": now + 300, "sha256": body_digest(BODY)}
    return {k: v for k, v in (base | changes).items() if v is not None}


def token(alg: str = "HS256", secret: str = SECRET, **changes: Any) -> str:
    return jwt.encode(claims(**changes), secret, algorithm=alg)


def unsigned(**changes: Any) -> str:
    def b64(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(**changes))}."


HOUR = 3600
TOKENS: dict[str, Callable[[], str]] = {
    "ours": lambda: sign_body(BODY, KEY, SECRET),
    "ours, for a room": lambda: sign_body(BODY, KEY, SECRET, room="call-0123456789ab"),
    "hand-made": token,
    "Bearer": lambda: "Bearer " + token(),
    "empty": lambda: "",
    "garbage": lambda: "not.a.jwt",
    "alg none": unsigned,
    "HS512": lambda: token(alg="HS512"),
    "other secret": lambda: token(secret="another-secret-" + "x" * 64),
    "other issuer": lambda: token(iss="APIother"),
    "no issuer": lambda: token(iss=None),
    "no exp": lambda: token(exp=None),
    "expired an hour ago": lambda: token(exp=int(time.time()) - HOUR),
    "expired within the leeway": lambda: token(exp=int(time.time()) - 30),
    "not yet valid": lambda: token(nbf=int(time.time()) + HOUR),
    "nbf within the leeway": lambda: token(nbf=int(time.time()) + 30),
    "no sha256": lambda: token(sha256=None),
    "sha256 not a string": lambda: token(sha256=5),
    "sha256 not base64": lambda: token(sha256="%%%"),
    "another body's sha256": lambda: token(sha256=body_digest(BODY + b" ")),
    "exp 50 min ahead": lambda: token(exp=int(time.time()) + 50 * 60),
    "exp decades ahead": lambda: token(exp=int(time.time()) + 30 * 365 * 86400),
}
# Where we differ from TokenVerifier on purpose: it takes any `exp` ahead, and a token
# leaked once would verify (with its body) for decades. LiveKit signs its webhooks for 5
# minutes; we refuse an `exp` over WEBHOOK_MAX_AHEAD (1 h) away, as 401.
REFUSED_THOUGH_TOKEN_VERIFIER_TAKES = {"exp decades ahead"}


def old_check(header: str, body: bytes) -> str | None:
    """What the server did before: TokenVerifier, then the body hash; the room it covers."""
    from common.signing import bearer_token

    try:
        verified = TokenVerifier(KEY, SECRET).verify(bearer_token(header))
    except Exception:
        raise Unverified("token rejected") from None
    digest = verified.sha256
    if not isinstance(digest, str) or not digest:
        raise Unverified("no sha256")
    try:
        expected = base64.b64decode(digest, validate=True)
    except ValueError:
        raise Unverified("not base64") from None
    if hashlib.sha256(body).digest() != expected:
        raise Unverified("other body")
    return verified.video.room if verified.video is not None else None


@pytest.mark.parametrize("name", list(TOKENS), ids=list(TOKENS))
def test_the_same_verdict_as_livekit_apis_token_verifier(name: str) -> None:
    header = TOKENS[name]()
    verifier = BodyVerifier(KEY, SECRET)
    try:
        expected: SignedBody | None = SignedBody(room=old_check(header, BODY) or None)
    except Unverified:
        expected = None
    if name in REFUSED_THOUGH_TOKEN_VERIFIER_TAKES:
        assert expected is not None  # still a difference: TokenVerifier takes it
        expected = None
    if expected is None:
        with pytest.raises(Unverified):
            verifier.verify(header, BODY)
    else:
        assert verifier.verify(header, BODY) == expected


def test_an_exp_further_ahead_than_any_signer_of_ours_makes_is_refused() -> None:
    """Webhooks: an exp over an hour ahead (LiveKit signs for 5 minutes). Reports: over
    REPORT_MAX_AHEAD, and never one our agents make, whose clock may run minutes ahead."""
    webhooks = BodyVerifier(KEY, SECRET)
    with pytest.raises(Unverified, match="expires more than 1 h ahead"):
        webhooks.verify(token(exp=int(time.time()) + 3600 + 120), BODY)
    assert webhooks.verify(token(exp=int(time.time()) + 3600 - 120), BODY).room is None
    now = time.time()
    for agent_ahead_s in (0, 60, 180, 240):  # the agent's clock that far ahead of ours
        reports = BodyVerifier(KEY, SECRET, max_ahead=REPORT_MAX_AHEAD, clock=lambda: now)
        signed = token(exp=int(now + agent_ahead_s + TOKEN_TTL.total_seconds()))
        assert reports.verify(signed, BODY) == SignedBody()
    reports = BodyVerifier(KEY, SECRET, max_ahead=REPORT_MAX_AHEAD)
    assert reports.verify(sign_body(BODY, KEY, SECRET, room="call-1"), BODY).room == "call-1"
    for ahead_s in (REPORT_MAX_AHEAD.total_seconds() + 60, 6 * 3600, 10**10):
        with pytest.raises(Unverified, match="expires more than 10 min ahead"):
            reports.verify(token(exp=int(time.time() + ahead_s)), BODY)


@pytest.mark.parametrize("agent_ahead_s", [0, 61, 180, 290])
def test_a_report_signed_by_an_agent_whose_clock_runs_ahead_verifies(agent_ahead_s: int) -> None:
    """The agent's token says nbf = its now: an agent host a minute and a second ahead had
    every report refused (ImmatureSignatureError, 401, not retried), though REPORT_MAX_AHEAD
    was made for such clocks. Up to REPORT_CLOCK_AHEAD (5 min) they verify; webhooks keep
    the minute of leeway, and a report further ahead is refused, saying why."""
    now = int(time.time())
    signed = sign_body(BODY, KEY, SECRET, room="call-1")
    # The same token as the agent made it, its clock `agent_ahead_s` ahead of ours.
    ahead = jwt.decode(signed, SECRET, algorithms=["HS256"], options={"verify_nbf": False})
    ahead |= {"nbf": now + agent_ahead_s, "exp": now + agent_ahead_s + 300}
    header = jwt.encode(ahead, SECRET, algorithm="HS256")
    reports = BodyVerifier(
        KEY, SECRET, max_ahead=REPORT_MAX_AHEAD, not_before_leeway=REPORT_CLOCK_AHEAD
    )
    assert reports.verify(header, BODY).room == "call-1"
    if agent_ahead_s > 60:
        with pytest.raises(Unverified):
            BodyVerifier(KEY, SECRET).verify(header, BODY)
    too_far = jwt.encode(ahead | {"nbf": now + 400, "exp": now + 500}, SECRET, algorithm="HS256")
    with pytest.raises(Unverified, match=r"nbf is \d+ s ahead of this server.s clock"):
        reports.verify(too_far, BODY)


def test_the_room_a_token_covers() -> None:
    verifier = BodyVerifier(KEY, SECRET)
    signed = verifier.verify(sign_body(BODY, KEY, SECRET, room="call-0123456789ab"), BODY)
    assert signed.room == "call-0123456789ab"
    assert verifier.verify(sign_body(BODY, KEY, SECRET), BODY).room is None
    with pytest.raises(Unverified, match="video grant"):
        verifier.verify(token(video="call-0123456789ab"), BODY)


def test_a_verifier_needs_the_key_and_secret() -> None:
    with pytest.raises(ValueError, match="must be set"):
        BodyVerifier("", SECRET)
    with pytest.raises(ValueError, match="cannot be an HMAC secret"):
        BodyVerifier(KEY, "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----")


def test_the_secret_is_prepared_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyJWT prepares (inspects) the HMAC key on every check; ours is prepared as the
    verifier is made, and checks of our tokens do not prepare it again."""
    from jwt.algorithms import HMACAlgorithm

    verifier = BodyVerifier(KEY, SECRET)
    ours, theirs = sign_body(BODY, KEY, SECRET), token(secret="another-secret-" + "x" * 64)
    prepared: list[object] = []
    real = HMACAlgorithm.prepare_key

    def counted(self: HMACAlgorithm, key: str | bytes) -> bytes:
        prepared.append(key)
        return real(self, key)

    monkeypatch.setattr(HMACAlgorithm, "prepare_key", counted)
    for _ in range(3):
        verifier.verify(ours, BODY)
    with pytest.raises(Unverified):
        verifier.verify(theirs, BODY)
    assert prepared == []


# Mostly the alphabet, with the characters and lengths the rules are about.
SEGMENT_BYTES = st.lists(
    st.sampled_from(list(b"AQgw_-09az=") + list(b"+/!. \n\x00\xff")), max_size=14
).map(bytes)


@pytest.mark.skipif(
    not hasattr(PyJWS, "_decode_base64url_segment"), reason="this PyJWT decodes segments inline"
)
@given(SEGMENT_BYTES)
@example(b"")
@example(b"QQ")
@example(b"QQ==")
@example(b"QQ=")
@example(b"QR")  # not the canonical encoding of its byte
@example(b"Q===")
@example(b"QUFB=")
@example(b"A")
@example(b"QQ=\n")
def test_a_segment_gets_pyjwts_verdict(segment: bytes) -> None:
    """decode_segment (one regex for the alphabet) decodes what PyJWT decodes, to the same
    bytes, and refuses what it refuses."""
    try:
        expected: bytes | None = PyJWS._decode_base64url_segment(segment, "payload")
    except DecodeError:
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            decode_segment(segment, "payload")
    else:
        assert decode_segment(segment, "payload") == expected


def test_the_verifier_decodes_segments_with_the_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    """BodyVerifier's checks go through decode_segment where PyJWT has the slow check."""
    if not hasattr(PyJWS, "_decode_base64url_segment"):
        pytest.skip("this PyJWT decodes segments inline")
    seen: list[str] = []
    verifier = BodyVerifier(KEY, SECRET)
    real = verifier._jwt._jws._decode_base64url_segment

    def counted(segment: bytes, name: str) -> bytes:
        seen.append(name)
        return real(segment, name)

    monkeypatch.setattr(verifier._jwt._jws, "_decode_base64url_segment", counted)
    assert real is decode_segment
    verifier.verify(sign_body(BODY, KEY, SECRET), BODY)
    assert seen == ["header", "payload", "crypto"]


def test_a_refusal_names_the_setting_or_the_clock() -> None:
    """The log line of a refused webhook or report said "token rejected
    (InvalidSignatureError)": neither the setting to look at (a secret rotated on one side
    only, another key) nor, for a clock an hour off, by how much."""
    now = int(time.time())
    verifier = BodyVerifier(KEY, SECRET)

    def refusal(header: str) -> str:
        with pytest.raises(Unverified) as refused:
            verifier.verify(header, BODY)
        return str(refused.value)

    other_secret = token(secret="another-secret-" + "x" * 64, nbf=now, exp=now + 300)
    assert "not signed with this server's LIVEKIT_API_SECRET" in refusal(other_secret)
    other_key = token(iss="APIother", nbf=now, exp=now + 300)
    assert "another API key than this server's LIVEKIT_API_KEY" in refusal(other_key)
    behind = token(nbf=now - 3900, exp=now - 3600)
    said = r"its exp is 36\d\d s behind this server's clock, over the 1 min allowed: is the"
    assert re.search(said, refusal(behind))
    ahead = token(nbf=now + 3600, exp=now + 3900)
    assert re.search(r"its nbf is 3[56]\d\d s ahead of this server's clock", refusal(ahead))
    issued_ahead = token(nbf=None, iat=now + 3600, exp=now + 3900)
    assert re.search(r"its iat is 3[56]\d\d s ahead of this server's clock", refusal(issued_ahead))
