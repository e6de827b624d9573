"""Placing and ending calls through LiveKit's server API (livekit-api).

A call is an explicit agent dispatch into a room named after the call id, then an outbound SIP
participant in that room. The dispatch never restarts its job (a crashed agent must not cause
a second call) and the client never retries a request (a retried CreateSIPParticipant would
ring the callee twice), so LiveKitAPI is built with `failover=False`.

Every request is bounded by REQUEST_TIMEOUT_S here: livekit-api passes `timeout=None` to
aiohttp for the methods without a timeout argument, which switches the session's timeout off.
One that ran out of time before it was sent (no connection in time) was not carried out; one
sent and unanswered may have been (a dial: the phone may ring).

What LIVEKIT_URL answers is read with care (`create_session`): a redirect is not followed (it
would send the call's number and instructions to another origin, and take that origin's
answer for LiveKit's), a 200 is LiveKit's only as application/protobuf (an empty body parses
as a valid, empty message), an answer is read up to MAX_ANSWER_BYTES (an endless one took
7.5 GB and held the loop 15 s), and an error body that is not Twirp's JSON object is read as no
error body at all (livekit-api raised AttributeError on `[1]`: a 500, and a dead reaper).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api._service import Service
from livekit.protocol import models
from livekit.protocol.agent_dispatch import JRP_NEVER

from common.contracts import (
    ATTR_AGENT_NAME,
    ATTR_SIP_CALL_STATUS,
    SIP_STATUS_ACTIVE,
    DispatchMetadata,
)
from common.descriptors import OUT_OF_DESCRIPTORS, out_of_descriptors
from common.http_body import read_capped
from common.masking import mask_phone, remote_text
from common.settings import Settings
from common.signing import TokenSigner

logger = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_TIMEOUT_S = 10.0
# The most of an answer read from LiveKit. Ours are small (a dispatch, a participant, at most
# ROOMS_PER_REQUEST rooms: a few KiB); a proxy's page or an endless stream is not.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
PROTOBUF = "application/protobuf"  # what LiveKit's Twirp answers carry (its requests too)
NOT_LIVEKIT = "the answer is not LiveKit's (is LIVEKIT_URL a LiveKit server?)"
# A 200 whose message lacks the id LiveKit's always carries, as a failure's reason says it.
NAMES_NO = (
    "answered 200 naming no {what}, which LiveKit's answers always do (is LIVEKIT_URL a"
    " LiveKit server?)"
)


class LiveKitError(Exception):
    """LiveKit could not place or end a call. `http_status` is what our client is answered."""

    http_status = 502

    def __init__(
        self,
        reason: str,
        *,
        sip_status: int | None = None,
        maybe_done: bool = False,
        kind: str | None = None,
        sent: bool = True,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status
        # The kind of failure, without LiveKit's own words (they may name the call): what a
        # failure said once a minute is told apart by (a carrier's SIP 503 is not a key
        # LiveKit refused).
        self.kind = kind or type(self).__name__
        # True when the request may have reached LiveKit and been carried out all the same
        # (a timeout, a dropped connection): for a dial, the phone may be ringing.
        self.maybe_done = maybe_done
        # False when the request never reached LiveKit (no connection): it did nothing, and
        # made nothing a later request should undo (a dispatch's room).
        self.sent = sent
        self.goal = "place the call"  # what LiveKit did not do, as a client is told
        # The seconds LiveKit (or a gateway before it) asked to wait, its 429's or 503's
        # Retry-After: what our 503 asks of its client in turn. None: it asked nothing.
        self.retry_after_s: int | None = None
        self.call_id: str | None = None  # the call it was about, once the service knows it

    def __str__(self) -> str:
        return f"LiveKit did not {self.goal}: {self.reason}"

    @property
    def may_have_rung(self) -> bool:
        """For a dial: the phone may have rung. The request may have been carried out, or
        LiveKit answered with a SIP status (the callee's network was reached: 486 Busy)."""
        return self.maybe_done or self.sip_status is not None


class LiveKitRefused(LiveKitError):
    """LiveKit answered with an error (bad trunk, permission, SIP failure...)."""

    http_status = 502


class LiveKitUnavailable(LiveKitError):
    """LiveKit could not be reached."""

    http_status = 503


class LiveKitOverLimit(LiveKitUnavailable):
    """LiveKit (or a gateway before it) answered that it is over a limit of its own (HTTP 429,
    Twirp `resource_exhausted`: a rate limit on our key, a quota): it is there and answering,
    did nothing, and will take requests again later. No setting of ours is wrong."""


class LiveKitTimeout(LiveKitError):
    """LiveKit did not answer in time."""

    http_status = 504


@dataclass(frozen=True)
class PlacedCall:
    participant_id: str
    sip_call_id: str


class AnswerRefused(aiohttp.ClientError):
    """What LIVEKIT_URL answered is not read: a redirect, or too long an answer."""

    def __init__(self, why: str, *, maybe_done: bool) -> None:
        super().__init__(why)
        self.why = why
        self.maybe_done = maybe_done


class _CarefulResponse(aiohttp.ClientResponse):
    """A response of LIVEKIT_URL: its body read up to MAX_ANSWER_BYTES, and its JSON (what
    livekit-api reads of an error) only as Twirp's error object."""

    async def read(self) -> bytes:
        if self._body is None:  # aiohttp's own cache of the body: read once, here
            if (self.content_length or 0) > MAX_ANSWER_BYTES:
                self.close()
                raise _too_long()
            body = await read_capped(self, MAX_ANSWER_BYTES + 1)
            if len(body) > MAX_ANSWER_BYTES:
                self.close()
                raise _too_long()
            self._body = body
        return await super().read()

    async def json(self, *args: Any, **kwargs: Any) -> Any:
        return twirp_error_object(await super().json(*args, **kwargs))


def _too_long() -> AnswerRefused:
    return AnswerRefused(
        f"its answer is longer than {MAX_ANSWER_BYTES // (1024 * 1024)} MiB", maybe_done=True
    )


def twirp_error_object(body: object) -> dict[str, Any]:
    """Twirp's error JSON as livekit-api reads it (`code`, `msg`, `meta` of text values),
    whatever `body` is: a body of another shape raises ValueError (livekit-api then reads
    it as no error body: code `unknown`); values of another type are left out."""
    if not isinstance(body, dict):
        raise ValueError("a Twirp error is a JSON object")
    error: dict[str, Any] = {}
    for key in ("code", "msg"):
        if isinstance(body.get(key), str):
            error[key] = body[key]
    meta = body.get("meta")
    if isinstance(meta, dict):
        error["meta"] = {k: v for k, v in meta.items() if isinstance(v, str)}
    return error


# The longest wait of LiveKit's Retry-After passed on (a value of hours is read as this).
MAX_RETRY_AFTER_S = 600


@dataclass
class _Exchange:
    """What the session saw of the request under way in this task: made as each request
    starts (`_drops_told_apart`) and left after it, for its error's translation."""

    reused: bool = False  # on a connection kept open since an earlier request
    # Its headers went out. Not, when it ran out of time: it waited for one of the session's
    # connections (all busy with slow requests) or for LiveKit to accept one (a host down, a
    # network dropping packets), and LiveKit never saw it.
    sent: bool = False
    asked_wait_s: int | None = None  # a 429's or 503's Retry-After, in whole seconds
    # A gateway's 503 saying its connection to LiveKit broke once the request was passed on.
    cut_behind: bool = False


# The exchange of the request under way in this task (None: none made through the session).
_EXCHANGE: ContextVar[_Exchange | None] = ContextVar("livekit_exchange", default=None)


def asked_wait_s(status: int, retry_after: str | None) -> int | None:
    """The whole seconds a 429 or 503 answer's `Retry-After` asks (pure), up to
    MAX_RETRY_AFTER_S; None if it asks nothing read here (an HTTP date, a bad value)."""
    if status not in (429, 503) or retry_after is None:
        return None
    value = retry_after.strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return max(1, min(int(value[:6]), MAX_RETRY_AFTER_S))


# Envoy's own 503 (Istio's, Contour's, Envoy Gateway's) when the connection to its upstream
# ended before the upstream's answer began, and the reasons of those that never sent it on:
# no connection made, its circuit breaker (overflow), a stream refused unprocessed.
_RESET_BEFORE_HEADERS = b"disconnect/reset before headers"
_NOT_PASSED_ON = (b"connection failure", b"connection timeout", b"overflow", b"refused stream")


def reset_after_sent(body: bytes) -> bool:
    """Whether a 503's `body` is Envoy's for a request it passed on whose connection then
    broke before the answer began (its `UC`, `connection termination`; a reset), so that
    LiveKit may have carried it out (pure). Its reset reason, when said, tells those it never
    passed on apart."""
    if _RESET_BEFORE_HEADERS not in body:
        return False
    reason = body.rpartition(b"reset reason:")[2]
    return not any(said in reason for said in _NOT_PASSED_ON)


async def _wait_asked(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    exchange = _EXCHANGE.get()
    if exchange is None:  # (made by _drops_told_apart, the session's outer middleware)
        return response
    exchange.asked_wait_s = asked_wait_s(response.status, response.headers.get("Retry-After"))
    if response.status == 503 and response.content_type != "application/json":
        # Not LiveKit's (Twirp's errors are JSON): a gateway's, read here for what it says
        # (livekit-api reads no more of it than a JSON error). Read up to MAX_ANSWER_BYTES,
        # once: livekit-api's read takes it from aiohttp's cache.
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            exchange.cut_behind = reset_after_sent(await response.read())
    return response


async def _no_redirects(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    response = await handler(request)
    if response.status in _REDIRECTS:
        response.release()
        raise AnswerRefused(
            f"LIVEKIT_URL answered a redirect ({response.status}); set it to where LiveKit is",
            maybe_done=False,
        )
    if response.status == 200 and response.content_type != PROTOBUF:
        # An empty body parses as a valid protobuf message (every field unset): a server
        # that answers any POST with an empty 200 took every call (answered 200 `dialing`,
        # dispatch and participant ids empty, nobody called) and /readyz said ready.
        # LiveKit's Twirp answers are application/protobuf, empty ones too (DeleteRoom).
        response.close()
        raise AnswerRefused(NOT_LIVEKIT, maybe_done=True)
    return response


class DroppedUnanswered(aiohttp.ServerDisconnectedError):
    """LiveKit (or what LIVEKIT_URL leads to) closed the connection without answering: on a
    connection of its own and with a plain URL (`plain`: ws:// or http://), what a port
    serving TLS does to a plain request; on one `reused` from an earlier request, what a
    server does to a kept-alive connection it closes as the request is sent."""

    def __init__(self, *, plain: bool, reused: bool) -> None:
        super().__init__()
        self.plain = plain
        self.reused = reused


async def _reused(
    _session: aiohttp.ClientSession,
    _context: SimpleNamespace,
    _params: aiohttp.TraceConnectionReuseconnParams,
) -> None:
    if (exchange := _EXCHANGE.get()) is not None:
        exchange.reused = True


async def _headers_sent(
    _session: aiohttp.ClientSession,
    _context: SimpleNamespace,
    _params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    if (exchange := _EXCHANGE.get()) is not None:
        exchange.sent = True


async def _drops_told_apart(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """A connection closed unanswered raised as DroppedUnanswered, saying whether it was a
    new one: its TLS advice read wrong for a kept-alive connection LiveKit closed (it had just
    answered on that port without TLS) and for a wss:// URL."""
    exchange = _Exchange()
    _EXCHANGE.set(exchange)  # this request's own, not an earlier one's in the same task
    try:
        return await handler(request)
    except aiohttp.ServerDisconnectedError as exc:
        plain = request.url.scheme == "http"  # livekit-api sends ws:// URLs as http://
        raise DroppedUnanswered(plain=plain, reused=exchange.reused) from exc


def create_session() -> aiohttp.ClientSession:
    """The client session of LiveKit's requests (see the module's docstring)."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_reuseconn.append(_reused)
    trace.on_request_headers_sent.append(_headers_sent)
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        response_class=_CarefulResponse,
        middlewares=(_drops_told_apart, _wait_asked, _no_redirects),
        trace_configs=[trace],
    )


def create_client(settings: Settings, url: str, session: aiohttp.ClientSession) -> api.LiveKitAPI:
    """One LiveKitAPI for the app, on the app's client session, with no automatic retries,
    whose requests' tokens are signed by a TokenSigner."""
    lkapi = api.LiveKitAPI(
        url,
        settings.livekit_api_key,
        settings.livekit_api_secret,
        session=session,
        failover=False,
    )
    sign_requests(lkapi, TokenSigner(settings.livekit_api_key, settings.livekit_api_secret))
    return lkapi


def sign_requests(lkapi: api.LiveKitAPI, signer: TokenSigner) -> None:
    """Each of `lkapi`'s services signs its requests' tokens with `signer`: the tokens
    livekit-api's own `_auth_header` makes, at a tenth of the CPU (common.signing.TokenSigner).
    A service with a token given to it (livekit-api's token mode) keeps sending that."""
    for service in vars(lkapi).values():
        if isinstance(service, Service) and not getattr(service, "_token", None):
            service._auth_header = signer.auth_header  # type: ignore[method-assign]


def dispatch_metadata(
    call_id: str,
    phone_number: str,
    record: dict[str, Any],
    ringing_timeout_s: int | None = None,
    report_url: str | None = None,
) -> str:
    """What the agent job receives (common.contracts.DispatchMetadata)."""
    return DispatchMetadata(
        call_id=call_id,
        phone_number=phone_number,
        config=record,
        ringing_timeout_s=ringing_timeout_s,
        report_url=report_url,
    ).to_json()


# What each request does, in the words of the error a client is given.
_GOALS = {
    "agent dispatch": "place the call",
    "SIP dial": "place the call",
    "hang up": "end the call",
    "readiness probe": "answer the readiness probe",
    "list rooms": "find the rooms that finished unheard",
    "list participants": "see whether an agent joined the call",
}


# The requests that place a call, whose 503 passes on the wait LiveKit asked.
_PLACING = frozenset({"agent dispatch", "SIP dial"})


# What a LiveKit request may fail with: no answer in time, a Twirp error, the connection,
# or a 200 whose body is not the protobuf asked for (LIVEKIT_URL points at something else:
# a proxy's page, another service).
FAILURES = (TimeoutError, api.ServerError, aiohttp.ClientError, DecodeError)


def _translate(exc: BaseException, action: str) -> LiveKitError:
    exchange = _EXCHANGE.get() or _Exchange(sent=True)  # none seen: it may have been sent
    error = _translated(exc, action, exchange)
    error.goal = _GOALS[action]
    if action in _PLACING and isinstance(exc, api.ServerError) and exc.status in (429, 503):
        # LiveKit's wait, passed on: a LiveKit in maintenance answering 503 Retry-After: 120
        # had its clients told to try again in 2 s, each try a call recorded and refused.
        # A call's placement only: a hang-up told LiveKit's 600 s left the callee on the
        # line, the call going on, for ten minutes before it was tried again.
        error.retry_after_s = exchange.asked_wait_s
    return error


def _translated(exc: BaseException, action: str, exchange: _Exchange) -> LiveKitError:
    # LiveKit's words go into the call's reason, the API's answer, logs and customer
    # webhooks: as remote_text makes them (digits masked, tokens and control characters out).
    if isinstance(exc, api.SipCallError) and exc.sip_status_code is not None:
        status = remote_text(exc.sip_status or "")
        reason = f"{action}: SIP {exc.sip_status_code} {status}".strip()
        kind = f"{action}: SIP {exc.sip_status_code}"
        return LiveKitRefused(reason, sip_status=exc.sip_status_code, kind=kind)
    if isinstance(exc, api.ServerError):
        # it may name the room: a call id
        message = remote_text(f"{exc.code}: {exc.message}" if exc.message else exc.code)
        if exc.status == 401:  # our token refused: a key revoked or rotated, or the clocks
            message += " (check LIVEKIT_API_KEY and LIVEKIT_API_SECRET, and this host's clock)"
        elif exc.status in (404, 405) and exc.code != api.TwirpErrorCode.NOT_FOUND:
            # No LiveKit route gives it (a room it does not have is its own `not_found`):
            # LIVEKIT_URL names something else, a path pasted with it, another service.
            message += (
                " (no LiveKit API at this address: check LIVEKIT_URL, LiveKit's own URL such"
                " as wss://<project>.livekit.cloud, with a path only if a proxy serves"
                " LiveKit under one"
            )
            # A self-hosted LiveKit from before agent dispatch serves the rest of its API
            # (the readiness probe passed, /readyz ready) and answers this one 404: "check
            # LIVEKIT_URL" alone sent its operator to a URL that was right.
            if action == "agent dispatch":
                message += (
                    "; if LiveKit answers its other requests there, it is a LiveKit server"
                    " without agent dispatch, too old for this service: upgrade it"
                )
            message += ")"
        kind = f"{action}: LiveKit answered {exc.status}"
        reason = f"{action}: LiveKit answered {exc.status} {message}"
        if exc.code in ("deadline_exceeded", "canceled") or exc.status == 504:
            # LiveKit (Twirp's 408: a SIP service that took the dial was late to answer for
            # it, or the request's handling was canceled under it, as by a LiveKit stopping),
            # or a gateway before it (504), gave up waiting for the request's outcome: it may
            # have been carried out. Read as a refusal, a dial's key was freed and its
            # client's retry rang the person a second time.
            return LiveKitTimeout(reason, maybe_done=True, kind=kind)
        if exc.status == 429 or exc.code == "resource_exhausted":
            # LiveKit (or a gateway before it) over a limit of its own: it did nothing, and
            # later it will. Read as a refusal (502, no Retry-After), it told the client the
            # call could not be placed, as a trunk LiveKit does not have does.
            return LiveKitOverLimit(
                f"{reason} (LiveKit is over a limit: try again later)", kind=kind
            )
        if exc.status == 502:
            # No LiveKit route answers 502 (Twirp maps no error to it): a gateway before
            # LiveKit passed the request on and got no valid answer back (LiveKit stopped or
            # reset the connection while carrying it out). A dial may have been made: read
            # as unavailable (503 Retry-After, the key freed), the retry rang a second time.
            return LiveKitUnavailable(
                f"{reason} (a gateway before LiveKit: it may have carried the request out)",
                kind=kind,
                maybe_done=True,
            )
        if exc.status == 503 and exchange.cut_behind:
            # Envoy before LiveKit passed the request on and its connection to LiveKit broke
            # before LiveKit answered (LiveKit stopping, restarted, resetting it while carrying
            # it out): as nginx's 502 above. Read as unavailable, a dial's key was freed and
            # the client's retry rang the person a second time.
            return LiveKitUnavailable(
                f"{reason} (a gateway before LiveKit lost its connection to LiveKit before"
                " LiveKit answered: it may have carried the request out)",
                kind=kind,
                maybe_done=True,
            )
        cls: type[LiveKitError] = LiveKitUnavailable if exc.status >= 500 else LiveKitRefused
        return cls(reason, kind=kind)
    if isinstance(exc, AnswerRefused):
        return LiveKitUnavailable(f"{action}: {exc.why}", maybe_done=exc.maybe_done)
    if isinstance(exc, TimeoutError) and not exchange.sent:
        # Read as "did not answer" (a 504, the dial one that may have rung), a LiveKit host
        # that accepted no connection, or a burst of dials waiting for the session's
        # connections behind slow ones, recorded every call failed and kept its key: nothing
        # had been sent, and a retry would have placed it.
        return LiveKitUnavailable(
            f"{action}: no connection to LiveKit within {REQUEST_TIMEOUT_S:g} s (LiveKit, or"
            " the network to it, is slow or down): the request was not sent",
            maybe_done=False,
            sent=False,
        )
    if isinstance(exc, TimeoutError):
        return LiveKitTimeout(
            f"{action}: LiveKit did not answer within {REQUEST_TIMEOUT_S:g} s", maybe_done=True
        )
    if isinstance(exc, DecodeError):
        return LiveKitUnavailable(f"{action}: {NOT_LIVEKIT}", maybe_done=True)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        # No request was sent. Which certificate check failed is what to fix (a self-signed
        # or expired certificate, another host's name); the class's name alone said none.
        refused = exc.certificate_error
        why = getattr(refused, "verify_message", None) or str(refused)
        return LiveKitUnavailable(
            f"{action}: LiveKit's TLS certificate was refused ({remote_text(why)[:200]})",
            maybe_done=False,
            sent=False,
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        # wss:// or https:// to a port that speaks no TLS (a LiveKit without it, a proxy's
        # plain port): it read "LiveKit unreachable (ClientConnectorSSLError)" alone.
        reason = getattr(exc.os_error, "reason", None) or type(exc.os_error).__name__
        reason = remote_text(str(reason)).lower().replace("_", " ")[:200]
        return LiveKitUnavailable(
            f"{action}: the TLS handshake with LiveKit failed ({reason}): wss:// and https://"
            " need TLS on that port; ws:// or http:// for a LiveKit that speaks none (check"
            " LIVEKIT_URL)",
            maybe_done=False,
            sent=False,
        )
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        # A port that speaks TLS drops a plain request unanswered (ws:// or http:// to it):
        # "LiveKit unreachable (ServerDisconnectedError)" named neither that nor the setting.
        # Only a plain request on a connection of its own may be that.
        why = ""
        if isinstance(exc, DroppedUnanswered) and exc.reused:
            why = (
                " (on a connection kept open since an earlier request: LiveKit, or a proxy"
                " before it, closed it as the request was sent)"
            )
        elif isinstance(exc, DroppedUnanswered) and exc.plain:
            why = " (if it serves TLS on that port, LIVEKIT_URL must start with wss:// or https://)"
        return LiveKitUnavailable(
            f"{action}: LiveKit closed the connection without an answer{why}", maybe_done=True
        )
    if isinstance(exc, aiohttp.ClientPayloadError):
        # LiveKit answered (its status and headers came), and the rest of its answer did not:
        # the connection closed mid-answer (or its encoding broke). "LiveKit unreachable
        # (ClientPayloadError)" sent its operator to check a network that had carried the
        # request, and the answer's start.
        return LiveKitUnavailable(
            f"{action}: LiveKit's answer broke off before its end (the connection closed"
            " mid-answer): the request may have been carried out",
            maybe_done=True,
        )
    if isinstance(exc, aiohttp.ClientConnectorError) and out_of_descriptors(exc):
        # No connection opened: "LiveKit unreachable" sent its operator to check LiveKit.
        return LiveKitUnavailable(
            f"{action}: {OUT_OF_DESCRIPTORS}",
            maybe_done=False,
            kind=f"{action}: descriptors",
            sent=False,
        )
    # No connection at all means LiveKit never saw the request; anything later may have.
    maybe = not isinstance(exc, aiohttp.ClientConnectorError)
    return LiveKitUnavailable(
        f"{action}: LiveKit unreachable ({_unreachable_why(exc)})", maybe_done=maybe, sent=maybe
    )


def _unreachable_why(exc: BaseException) -> str:
    """What connecting to LiveKit (or the connection) ran into, in words. The class's name
    alone ("LiveKit unreachable (ClientConnectorError)") told a port nothing listens on from
    a host name that does not resolve or a host with no route to it only to who read
    aiohttp's sources. Never the address (an API answer carries this): the error's own text
    names it ("Connect call failed ('10.0.0.5', 7880)"), so only its code is put in words."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "its host name did not resolve"
    code = getattr(exc, "errno", None)
    if isinstance(exc, aiohttp.ClientConnectorError):
        if code in _CONNECT_FAILURES:
            return _CONNECT_FAILURES[code]
        return (
            f"could not connect: {os.strerror(code)}"
            if isinstance(code, int)
            else "could not connect"
        )
    if isinstance(exc, aiohttp.ClientOSError) and isinstance(code, int):
        return f"the connection failed: {os.strerror(code)}"
    return type(exc).__name__


_CONNECT_FAILURES = {
    errno.ECONNREFUSED: "connection refused: nothing listens on its port",
    errno.EHOSTUNREACH: "no route to its host",
    errno.ENETUNREACH: "no route to its network",
    errno.ETIMEDOUT: "connecting timed out",
}


async def dispatch_agent(
    lkapi: api.LiveKitAPI,
    settings: Settings,
    *,
    call_id: str,
    phone_number: str,
    record: dict[str, Any],
    ringing_timeout_s: int,
) -> str:
    """Dispatch the agent to room `call_id` (creating the room); returns the dispatch id."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            dispatch = await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(
                    agent_name=settings.agent_name,
                    room=call_id,
                    metadata=dispatch_metadata(
                        call_id, phone_number, record, ringing_timeout_s, settings.report_url
                    ),
                    restart_policy=JRP_NEVER,
                )
            )
    except FAILURES as exc:
        raise _translate(exc, "agent dispatch") from exc
    if not dispatch.id:
        # LiveKit names each dispatch it makes: a 200 without an id is not its answer (an
        # empty protobuf from a proxy or stand-in), no proof an agent will join. Dialled on
        # it, the callee would answer to silence.
        raise LiveKitUnavailable("agent dispatch: " + NAMES_NO.format(what="dispatch"))
    return str(dispatch.id)


async def dial(
    lkapi: api.LiveKitAPI,
    settings: Settings,
    *,
    call_id: str,
    phone_number: str,
    ringing_timeout_s: int,
    max_duration_s: int,
) -> PlacedCall:
    """Dial `phone_number` into room `call_id` (never retried: a retry is a second call)."""
    try:
        participant = await lkapi.sip.create_sip_participant(
            api.CreateSIPParticipantRequest(
                sip_trunk_id=settings.sip_outbound_trunk_id,
                sip_call_to=phone_number,
                room_name=call_id,
                participant_identity=f"sip-{call_id}",
                participant_name="Callee",
                ringing_timeout=Duration(seconds=ringing_timeout_s),
                max_call_duration=Duration(seconds=max_duration_s),
                wait_until_answered=False,
            ),
            timeout=REQUEST_TIMEOUT_S,
        )
    except FAILURES as exc:
        raise _translate(exc, "SIP dial") from exc
    if not participant.participant_id:
        # LiveKit answers a dial with the participant its SIP service made in the room
        # (livekit-server's CreateSIPParticipant passes on the SIP service's id, identity and
        # call id): a 200 without one is not its answer (an empty protobuf from a proxy or
        # stand-in). Taken as placed, the call was answered 200 `dialing`, participant "",
        # and waited for a phone nobody may have rung; read as refused, its key would be
        # freed and a retry could ring the person twice. The dial may have been made.
        raise LiveKitUnavailable(
            "SIP dial: "
            + NAMES_NO.format(what="participant")
            + ": the number may have been dialled",
            maybe_done=True,
        )
    logger.info(
        "call %s dialing %s (participant %s)",
        call_id,
        mask_phone(phone_number),
        participant.participant_id,
        extra={"call_id": call_id},
    )
    return PlacedCall(participant.participant_id, participant.sip_call_id)


async def _about_room(request: Awaitable[T], action: str) -> T | None:
    """LiveKit's answer to `request`, about one room, within REQUEST_TIMEOUT_S; None if
    LiveKit has no such room. Raises LiveKitError when it cannot say."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await request
    except api.ServerError as exc:
        # LiveKit's own word only: a 404 of another code (a proxy's page, Twirp's bad_route)
        # is no LiveKit API at that address, which has not looked for the room. Read as the
        # room gone, a hang-up was answered 200 `canceled` while the call went on.
        if exc.code == api.TwirpErrorCode.NOT_FOUND:
            return None
        raise _translate(exc, action) from exc
    except FAILURES as exc:
        raise _translate(exc, action) from exc


async def end_room(lkapi: api.LiveKitAPI, room: str) -> bool:
    """Delete the call's room (hangs up every participant); False if it no longer exists."""
    deleted = lkapi.room.delete_room(api.DeleteRoomRequest(room=room))
    return await _about_room(deleted, "hang up") is not None


# Rooms asked about in one ListRooms request.
ROOMS_PER_REQUEST = 100


async def rooms_alive(lkapi: api.LiveKitAPI, names: list[str]) -> set[str]:
    """Which of the rooms `names` LiveKit has now; raises LiveKitError when it cannot say."""
    alive: set[str] = set()
    for start in range(0, len(names), ROOMS_PER_REQUEST):
        batch = names[start : start + ROOMS_PER_REQUEST]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=batch))
        except FAILURES as exc:
            raise _translate(exc, "list rooms") from exc
        alive.update(room.name for room in listed.rooms)
    return alive


@dataclass(frozen=True)
class RoomPresence:
    """Who is in a call's room: our agent's participant (AGENT_NAME's: livekit-agents names
    it in `lk.agent.name`; one without that attribute is another program's); a phone line that
    was answered (its SIP participant's `sip.callStatus` active)."""

    agent: bool
    callee_answered: bool


async def room_presence(lkapi: api.LiveKitAPI, room: str, agent_name: str) -> RoomPresence | None:
    """Who is in `room` now; None if the room is gone. Raises LiveKitError when LiveKit
    cannot say. An agent of another name than `agent_name` (one the project dispatches to
    every room: a recorder, a transcriber) is not the call's: it neither speaks to the
    callee nor reports."""
    listing = lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
    listed = await _about_room(listing, "list participants")
    if listed is None:
        return None
    if not listed.participants and not await rooms_alive(lkapi, [room]):
        # LiveKit lists a room it no longer has as empty, not as not_found (livekit/livekit
        # pkg/service/localstore.go and redisstore.go ListParticipants): ask for the room
        return None
    kinds = models.ParticipantInfo.Kind
    return RoomPresence(
        agent=any(
            p.kind == kinds.AGENT and p.attributes.get(ATTR_AGENT_NAME) == agent_name
            for p in listed.participants
        ),
        callee_answered=any(
            p.kind == kinds.SIP and p.attributes.get(ATTR_SIP_CALL_STATUS) == SIP_STATUS_ACTIVE
            for p in listed.participants
        ),
    )


async def check_reachable(lkapi: api.LiveKitAPI) -> None:
    """A cheap authenticated round trip for readiness; raises LiveKitError when it fails."""
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await lkapi.room.list_rooms(api.ListRoomsRequest(names=["readyz-probe"]))
    except FAILURES as exc:
        raise _translate(exc, "readiness probe") from exc
