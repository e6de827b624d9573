"""One table from domain errors to HTTP answers, and the middleware that applies it.

Handlers raise what went wrong (common/calls/errors.py, storage, config store, LiveKit); this
module alone decides the status, the message and headers such as Retry-After. Every error is
JSON `{"status": "error", "error": ..., "details": [...]}`; no stack trace reaches a client.
"""

from __future__ import annotations

import gzip
import logging
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from aiohttp import web
from aiohttp.compression_utils import ZLibDecompressor
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError
from aiohttp.http_parser import DeflateBuffer
from aiohttp.web_protocol import RequestHandler

from common.calls.errors import (
    CallAlreadyOver,
    CallOnAnotherSandbox,
    CallsJustEnded,
    CallsStillLive,
    InvalidCall,
    KeyReused,
    RateLimited,
    TooManyLiveCalls,
    TooManyTurns,
    UnknownCall,
)
from common.campaigns.errors import InvalidRows, UnknownCampaign
from common.config_store.store import ConfigWriteError
from common.descriptors import OUT_OF_DESCRIPTORS, OutOfDescriptors, out_of_descriptors
from common.livekit.client import LiveKitError, LiveKitUnavailable
from common.masking import redact
from common.repeats import Repeats
from common.storage.base import (
    DatabaseError,
    DatabaseGone,
    DatabaseLocked,
    DatabaseStalled,
    ErasureHeldUp,
    ErasureUnfinished,
)
from common.storage.campaign_programs import CampaignConflict, TooManyResumes
from common.text import is_unicode, quoted, shown_text

logger = logging.getLogger(__name__)

# What every answer's `Server` header says: the product, no versions (aiohttp's own default
# named Python's and its own, to anyone who asked).
SERVER_NAME = "outbound-caller"
_OUT_OF_DESCRIPTORS_SAID = Repeats()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpError(Exception):
    """An error that is already an HTTP answer (bad body, bad parameter, unauthorized)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Answer:
    status: int
    message: str
    details: Sequence[dict[str, Any]]
    headers: dict[str, str] | None = None
    call_id: str | None = None  # a call the client is told of in an error (its dial may have rung)


_UNREADABLE_BODY = "request body could not be read (its Content-Encoding or framing is broken)"


RETRY_S = 2  # a 503 of ours (the database, config.json) says to try again this much later


def _retry(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


def _rung(exc: LiveKitError) -> str | None:
    """The call of a dial that may have rung: its receiver is told of it (call.dialing,
    call.ended), so its client is told its id too, to know those events and GET it."""
    return exc.call_id if exc.may_have_rung else None


def _config_write_answer(exc: ConfigWriteError) -> Answer:
    """The 503 of a call whose config could not be written, without the server's paths: a
    lock held elsewhere answered every client "…: /srv/app/data/config.json.lock is held by
    another process" (the log line says it in full)."""
    from handlers.health import without_paths  # health answers with json_error: imported late

    why = without_paths(exc.strerror or "", ())
    return Answer(503, f"could not store the call's configuration: {why}", [], _retry(RETRY_S))


# The table: each domain error, the answer it gets. Subclasses match their base's row.
ANSWERS: list[tuple[type[BaseException], Callable[[Any], Answer]]] = [
    (HttpError, lambda e: Answer(e.status, e.message, [], e.headers)),
    (InvalidCall, lambda e: Answer(422, "invalid request", [f.to_json() for f in e.errors])),
    (TooManyLiveCalls, lambda e: Answer(429, str(e), [], _retry(e.retry_after_s))),
    (RateLimited, lambda e: Answer(429, str(e), [], _retry(e.retry_after_s))),
    (KeyReused, lambda e: Answer(409, str(e), [])),
    (UnknownCall, lambda e: Answer(404, "unknown call", [])),
    (InvalidRows, lambda e: Answer(422, str(e), e.details)),
    (UnknownCampaign, lambda e: Answer(404, "unknown campaign", [])),
    (CampaignConflict, lambda e: Answer(409, str(e), [])),
    (TooManyResumes, lambda e: Answer(429, str(e), [], _retry(e.retry_after_s))),
    (CallAlreadyOver, lambda e: Answer(409, str(e), [])),
    (CallOnAnotherSandbox, lambda e: Answer(409, str(e), [])),
    (CallsStillLive, lambda e: Answer(409, str(e), [])),
    (CallsJustEnded, lambda e: Answer(409, str(e), [], _retry(e.RETRY_AFTER_S))),
    (TooManyTurns, lambda e: Answer(409, str(e), [])),
    (ConfigWriteError, _config_write_answer),
    (ErasureUnfinished, lambda e: _unfinished_erasure_answer(e)),
    (ErasureHeldUp, lambda e: Answer(503, str(e), [], _retry(RETRY_S))),
    # A retry cannot help until the server is restarted: no Retry-After (probe AU).
    (
        DatabaseGone,
        lambda e: Answer(
            503,
            "calls database unavailable: its file was removed or replaced under the running"
            " server; restart the server",
            [],
        ),
    ),
    (
        DatabaseLocked,
        lambda e: Answer(
            503, "calls database unavailable: locked by another process", [], _retry(RETRY_S)
        ),
    ),
    (
        DatabaseStalled,
        lambda e: Answer(
            503, "calls database unavailable: it did not answer in time", [], _retry(RETRY_S)
        ),
    ),
    (DatabaseError, lambda e: Answer(503, "calls database unavailable", [], _retry(RETRY_S))),
    # A webhook_url's host looked up with no descriptor left: not the client's URL's fault.
    (OutOfDescriptors, lambda e: Answer(503, str(e), [], _retry(RETRY_S))),
    # LiveKit unreachable: nothing was placed (the key is free), a retry may well succeed;
    # not said of a dial that may have rung (the connection lost once LiveKit had it).
    (
        LiveKitUnavailable,
        lambda e: Answer(
            503,
            str(e),
            [],
            None if e.may_have_rung else _retry(e.retry_after_s or RETRY_S),
            _rung(e),
        ),
    ),
    (LiveKitError, lambda e: Answer(e.http_status, str(e), [], None, _rung(e))),
]


def _unfinished_erasure_answer(e: ErasureUnfinished) -> Answer:
    """The database's own answer, saying what the erasure did erase before it stopped: a bare
    "calls database unavailable" read as nothing erased."""
    cause = answer_for(e.cause) or Answer(503, "calls database unavailable", [], _retry(RETRY_S))
    done = e.done
    perhaps = (
        f", {e.unknown} more perhaps (the database's answer to them was lost)" if e.unknown else ""
    )
    return replace(
        cause,
        message=f"{cause.message}: the erasure stopped part way ({done.recipients} campaign"
        f" recipient(s) and {len(done.erased) - e.unknown} of {e.calls} call(s)"
        f" erased{perhaps}, not the rest); send the same request again to finish it",
    )


def answer_for(exc: BaseException) -> Answer | None:
    for kind, render in ANSWERS:
        if isinstance(exc, kind):
            return render(exc)
    return None


MAX_DETAILS = 1000
# A detail's field names where the problem is; a key of the client's (an unknown field) is
# part of it, quoted back as it can be shown: a 60 KB key came back whole in each detail, and
# a JSON "\ud800" key as a lone surrogate, which strict JSON readers refuse to decode.
MAX_FIELD_CHARS = 200


def json_error(
    status: int,
    error: str,
    details: Sequence[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    call_id: str | None = None,
) -> web.Response:
    """The one error shape: {"status": "error", "error": ..., "details": [...]}; at most
    MAX_DETAILS details, and then a last one counting the rest (a signed 1 MiB report of
    96,000 unknown keys was answered with 5 MB of them)."""
    details = details or []
    if len(details) > MAX_DETAILS:
        rest = len(details) - MAX_DETAILS
        details = [*details[:MAX_DETAILS], {"field": "", "error": f"and {rest:,} more"}]
    details = [
        {**d, "field": shown_text(d["field"], MAX_FIELD_CHARS)}
        if isinstance(d.get("field"), str)
        else d
        for d in details
    ]
    body: dict[str, Any] = {"status": "error", "error": error, "details": details}
    if call_id is not None:
        body["call_id"] = call_id
    return web.json_response(
        body,
        status=status,
        headers=headers,
    )


def error_response(exc: BaseException) -> web.Response | None:
    answer = answer_for(exc)
    if answer is None:
        return None
    return json_error(answer.status, answer.message, answer.details, answer.headers, answer.call_id)


# A run of escapes of bytes past ASCII: the only escapes that can make a target not UTF-8.
_HIGH_ESCAPES = re.compile(r"(?:%[89A-Fa-f][0-9A-Fa-f])+")


def _unreadable(target: str) -> bool:
    """The request's path and query as sent (`raw_path`), once its escapes are undone: a NUL,
    or bytes that are not UTF-8. Sent raw, those arrive as lone surrogates; escaped (`%FF`,
    `%C0%AF`), the URL parser would decode them to U+FFFD and the path would name something
    else. No id, number or parameter of ours holds either, and PostgreSQL refuses them.
    Only the runs of escaped bytes past ASCII are decoded, together in one go (apart by a
    space, which ends any sequence, as the ASCII or whole character next to each run does):
    undoing every escape of the target (`unquote_to_bytes`, a Python loop) cost 0.6-3.8 ms
    of the loop for any 8 KB request line of escapes, no token needed."""
    if not is_unicode(target) or "\x00" in target or "%00" in target:
        return True
    runs = _HIGH_ESCAPES.findall(target)
    if runs:
        try:
            bytes.fromhex("%20".join(runs).replace("%", "")).decode("utf-8")
        except UnicodeDecodeError:
            return True
    return False


def _repeated_parameter(request: web.Request) -> str | None:
    """A query parameter given more than once. No route of ours takes a list that way (lists
    are comma-separated), and each read the first: `status=completed&status=busy` listed
    completed calls alone, and a proxy checking the last `calls_per_second` of a campaign
    upload would pass what the server then read from the first."""
    if not request.query_string:
        return None
    query = request.query
    for name in query:  # each name once; getall has every value of it
        if len(query.getall(name)) > 1:
            return name
    return None


def _refusal(request: web.Request, exc: web.HTTPException) -> str:
    """aiohttp's own refusals, said so that a client knows what to send instead: a bare "Not
    Found" or "Method Not Allowed" named neither the path nor the methods it takes (`POST
    /calls`, `GET /calls/outbound`, `POST /outbound` as the seed's FastAPI route had it)."""
    path = _routed_path(request)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        methods = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed on {path}; it takes {methods}"
    if isinstance(exc, web.HTTPNotFound):
        return f"no route {path}; every route is listed at /openapi.json"
    return exc.reason


# An escaped "/" in a path as the router reads it (aiohttp keeps it escaped, so it splits no
# segment), and the words that say so.
_ESCAPED_SLASH = re.compile("%2F", re.IGNORECASE)
_NO_SEPARATOR = " (an escaped slash, %2F, is no path separator: write '/')"


def _routed_path(request: web.Request) -> str:
    """The path as the router matched it, quoted (`_shown`): with its escaped slashes still
    escaped. Its decoded form (`request.path`) named a route that is there: `POST
    /calls/call-x%2Fhangup` was refused "POST is not allowed on '/calls/call-x/hangup'; it
    takes GET, HEAD", and `POST /calls%2Foutbound` "no route '/calls/outbound'"."""
    path = request.rel_url.path_safe
    shown = _shown(path)
    return shown + _NO_SEPARATOR if _ESCAPED_SLASH.search(path) else shown


def _shown(path: str) -> str:
    """A path the client sent, as an error repeats it: quoted, escaped, cut at 80 characters."""
    return repr(shown_text(path, 81))


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _unreadable(request.raw_path):
        return json_error(
            400, "the request's path or query holds a NUL or bytes that are not UTF-8"
        )
    if (repeated := _repeated_parameter(request)) is not None:
        return json_error(400, f"query parameter {quoted(repeated)} is given more than once")
    try:
        return await handler(request)
    except (web.RequestPayloadError, HttpProcessingError):
        # A body aiohttp could not read: a Content-Encoding that is not what it says, chunked
        # or Content-Length framing cut short. What is left of it cannot be read either: had
        # aiohttp drained it after the answer (as it does an unread body), it would meet the
        # error again and log an ERROR with its tracebacks for every such request.
        request.content.feed_eof()
        unreadable = json_error(400, _UNREADABLE_BODY, headers={"Connection": "close"})
        # Closed as it says: a body refused at its end (refuse_cut_compressed_bodies) leaves
        # the parser ready for another request, and the connection stayed open.
        unreadable.force_close()
        return unreadable
    except ConnectionResetError:  # the client left mid-request: nobody to answer, nothing wrong
        logger.debug(
            "client closed the connection during %s %s", request.method, redact(request.path)
        )
        return json_error(400, "the client closed the connection")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = exc.headers.get("Allow")
        message = _refusal(request, exc)
        return json_error(exc.status, message, headers={"Allow": allow} if allow else None)
    except Exception as exc:
        response = error_response(exc)
        if response is not None:
            return response
        if out_of_descriptors(exc):
            # A file opened when first needed (the time zones' list, a zone's rules, a
            # module) refused for want of a descriptor: a 500 "internal error" with a
            # traceback for each request, for what frees itself (the first campaign after a
            # start, sent while the server was out of descriptors, was answered 500).
            if (more := _OUT_OF_DESCRIPTORS_SAID.due("descriptors")) is not None:
                logger.warning(
                    "%s %s answered 503: %s%s",
                    request.method,
                    redact(request.path),
                    exc,
                    more,
                )
            return json_error(503, OUT_OF_DESCRIPTORS, headers=_retry(RETRY_S))
        # The path masked as the access log masks it: it may hold a number (/dnc/{number}).
        logger.exception("unhandled error on %s %s", request.method, redact(request.path))
        return json_error(500, "internal error")


# Set on the apps whose HTTP parser's refusals are answered as their other errors are.
PARSER_ERRORS_AS_JSON = web.AppKey("parser_errors_as_json", bool)
# A Content-Encoding aiohttp's parser refuses with the request's headers (it decodes br and
# zstd only with their packages, which this server does not install), as its message names it.
_UNDECODED = re.compile(r"content-encoding: \w+ \((br|zstd)\)", re.IGNORECASE)


def answer_parser_errors_as_json() -> None:
    """Requests aiohttp's HTTP parser refuses before any app sees them (a request line or
    header over 8 KiB, a method that is not one, `Content-Encoding: br` or `zstd`) are
    answered in the API's JSON shape by apps with PARSER_ERRORS_AS_JSON, not with aiohttp's
    plain text: `Content-Encoding: br` got "400, message: Can not decode content-encoding:
    brotli (br). Please install `Brotli`", which told a client to install a package on its
    side and broke every client that reads the JSON error. aiohttp has no hook for these
    answers (the app's middlewares never run), so its handler's own is wrapped, once per
    process; other servers of the process (the sandbox's) answer as before."""
    original = RequestHandler.handle_error
    if getattr(original, "_answers_json", False):
        return

    def handle_error(
        self: RequestHandler,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        plain = original(self, request, status, exc, message)  # its log line, as before
        if not 400 <= status < 500 or not _answers_json(self):
            # Versionless too: the sandbox's refusals (a server of this process) named them.
            return _named_as_ours(plain) if isinstance(plain, web.Response) else plain
        say_wrong_protocol(request.remote, exc)
        answer = _named_as_ours(_parser_refusal(status, exc, message))
        answer.force_close()  # as aiohttp's: what follows on the connection is not read
        return answer

    handle_error._answers_json = True  # type: ignore[attr-defined]
    RequestHandler.handle_error = handle_error  # type: ignore[method-assign]


# A gzip member with nothing in it: a decoder between members (or not begun) reads it to its
# end; one part-way through a member reads it as more of that member's data, and fails.
_EMPTY_GZIP_MEMBER = gzip.compress(b"", mtime=0)


def refuse_cut_compressed_bodies() -> None:
    """A gzip or deflate body whose compressed stream stops short of its end is refused as
    unreadable (400), as one that is not what its Content-Encoding says is. aiohttp took a
    gzip body cut short as whole: a CSV of 20,000 recipients gzipped by a client that never
    flushed its compressor (or cut in half) made a campaign of its first 16,495 (9,972), with
    no error; and a deflate body cut short, which it refuses as the request ends, reached no
    handler, whose read waited for the rest: 408 "did not arrive within 30 s" after 30 s.
    aiohttp has no hook for this, so its decoder's end is wrapped, once per process, for the
    requests of apps with PARSER_ERRORS_AS_JSON (not for the client's responses)."""
    original = DeflateBuffer.feed_eof
    if getattr(original, "_refuses_cut", False):
        return

    def feed_eof(self: DeflateBuffer) -> None:
        protocol = getattr(self.out, "_protocol", None)
        if (
            self.size > 0
            and isinstance(protocol, RequestHandler)
            and _answers_json(protocol)
            and not _stream_ended(self)
        ):
            # As the parser does with a body it cannot decode part-way: the handler's read
            # raises it (400); at its end, the stream is not read after the answer.
            self.set_exception(ContentEncodingError(f"{self.encoding} stream cut short"))
            self.out.feed_eof()
            return
        original(self)

    feed_eof._refuses_cut = True  # type: ignore[attr-defined]
    DeflateBuffer.feed_eof = feed_eof  # type: ignore[method-assign]

    original_feed_data = DeflateBuffer.feed_data

    def feed_data(self: DeflateBuffer, chunk: bytes, size: int) -> bool:
        if self.size == 0 and self.encoding == "gzip":
            protocol = getattr(self.out, "_protocol", None)
            if isinstance(protocol, RequestHandler) and _answers_json(protocol):
                _take_zero_padding(self.decompressor)
        return original_feed_data(self, chunk, size)

    DeflateBuffer.feed_data = feed_data  # type: ignore[method-assign]


def _take_zero_padding(decompressor: object) -> None:
    """Zero bytes after a whole gzip member read as padding, as Python's gzip module, GNU
    gzip and zlib's gzread read them (some clients and proxies pad a body to a block): every
    such body was refused 400 "could not be read" (aiohttp took the zeros for the next
    member's header). Only between members: a body that starts with zeros, or one whose
    bytes after the zeros are not a whole member, is refused as before."""
    if not isinstance(decompressor, ZLibDecompressor):
        return
    new_decompressor = getattr(decompressor, "_new_decompressor", None)
    if new_decompressor is None or getattr(new_decompressor, "_takes_padding", False):
        return  # aiohttp's internals changed (its reading stands), or taken already

    def next_member() -> _AfterMember:
        return _AfterMember(new_decompressor())

    next_member._takes_padding = True  # type: ignore[attr-defined]
    decompressor._new_decompressor = next_member  # type: ignore[method-assign]


class _AfterMember:
    """A gzip decoder for what follows a whole member: zero bytes before its header are
    padding, skipped; then it is zlib's own."""

    def __init__(self, decoder: Any, begun: bool = False) -> None:
        self._decoder = decoder
        self.begun = begun  # a byte other than zero given to the decoder

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        if not self.begun:
            rest = bytes(data).lstrip(b"\x00")
            if not rest:
                return b""
            self.begun = True
            data = rest
        return cast(bytes, self._decoder.decompress(data, max_length))

    def flush(self, *args: Any) -> bytes:
        return cast(bytes, self._decoder.flush(*args)) if self.begun else b""

    def copy(self) -> _AfterMember:
        return _AfterMember(self._decoder.copy(), self.begun)

    @property
    def eof(self) -> bool:
        return bool(self._decoder.eof) if self.begun else False

    @property
    def unused_data(self) -> bytes:
        return cast(bytes, self._decoder.unused_data) if self.begun else b""

    @property
    def unconsumed_tail(self) -> bytes:
        return cast(bytes, self._decoder.unconsumed_tail) if self.begun else b""


def _stream_ended(buffer: DeflateBuffer) -> bool:
    """Whether the compressed body ended where its last member (gzip) or stream (deflate)
    ends. aiohttp starts a fresh gzip decoder after each member (for the next one), so a
    gzip decoder is asked whether it is between members: one that is reads an empty member
    whole."""
    try:
        decompressor = buffer.decompressor
        if not isinstance(decompressor, ZLibDecompressor):
            return True  # br, zstd: not decoded by this server (415)
        if buffer.encoding != "gzip":
            return bool(decompressor.eof)
        current = decompressor._decompressor
        if isinstance(current, _AfterMember) and not current.begun:
            return True  # a whole member, then nothing or zero padding
        # zlib's own decoder (aiohttp's default backend): its protocol type names no copy()
        probe = cast("zlib._Decompress", current).copy()
    except (AttributeError, TypeError, ValueError):
        # aiohttp's internals changed (a release this was not written for, another zlib
        # backend): its own check stands, rather than every compressed body failing here.
        return True
    try:
        probe.decompress(_EMPTY_GZIP_MEMBER)
    except zlib.error:
        return False
    return bool(probe.eof)


# What the parser's refusal shows of a peer that speaks another protocol to this plain-HTTP
# port (a load balancer set up so), and what to do about it. aiohttp logs such a refusal at
# DEBUG only (a bad method on a connection's first request: scanners' noise), and the server
# answered every request of that load balancer, its health checks too, 400 with an empty log.
WRONG_PROTOCOLS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (
        re.compile(r"Received HTTPS traffic on an HTTP port"),
        "spoke TLS (https) to this plain-HTTP port",
        "terminate TLS in front of this server and send it http:// (a load balancer's"
        " backend or health check protocol set to HTTPS?)",
    ),
    (
        # HTTP/2's connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" (h2c, prior knowledge)
        re.compile(r"Pause on PRI/Upgrade"),
        "spoke HTTP/2 (h2c) to this HTTP/1.1 port",
        "set the load balancer's backend protocol to HTTP/1.1 (GCP's backend service"
        " protocol HTTP, not HTTP/2; Envoy without http2_protocol_options)",
    ),
    (
        re.compile(r"'PROXY (?:TCP4|TCP6|UNKNOWN)\b"),
        "began with a PROXY protocol header (v1)",
        "this server does not read it: turn the PROXY protocol off for it (HAProxy's"
        " send-proxy, a load balancer's proxy protocol setting)",
    ),
    (
        # The v2 signature, "\r\n\r\n\0\r\nQUIT\n": the parser skips the blank lines and
        # refuses the line that is a NUL byte alone.
        re.compile(r"'\\x00'\s*\^?\s*$"),
        "began as a PROXY protocol v2 header does",
        "this server does not read it: turn the PROXY protocol off for it (an AWS NLB target"
        " group's proxy_protocol_v2, HAProxy's send-proxy-v2)",
    ),
)
WRONG_PROTOCOL_SAID = Repeats()


def say_wrong_protocol(remote: str | None, exc: BaseException | None) -> None:
    """A WARNING, once a minute per kind, for a request refused because its peer speaks
    TLS, HTTP/2 or the PROXY protocol to this port (WRONG_PROTOCOLS)."""
    said = str(exc.message) if isinstance(exc, HttpProcessingError) else ""
    for pattern, seen, advice in WRONG_PROTOCOLS:
        if pattern.search(said) and (more := WRONG_PROTOCOL_SAID.due(seen)) is not None:
            logger.warning(
                "a connection from %s %s, and its requests are refused (400)%s: %s",
                remote or "?",
                seen,
                more,
                advice,
            )
            return


def _answers_json(handler: RequestHandler) -> bool:
    """The app this connection serves has PARSER_ERRORS_AS_JSON."""
    server = getattr(handler, "_manager", None)
    app = getattr(getattr(server, "request_handler", None), "__self__", None)
    return isinstance(app, web.Application) and app.get(PARSER_ERRORS_AS_JSON, False)


def _parser_refusal(status: int, exc: BaseException | None, message: str | None) -> web.Response:
    said = exc.message if isinstance(exc, HttpProcessingError) else message or ""
    undecoded = _UNDECODED.search(str(said)) if isinstance(exc, ContentEncodingError) else None
    if undecoded is not None:
        return json_error(
            415,
            f"request body's Content-Encoding {undecoded.group(1).lower()!r} is not supported:"
            " send gzip, deflate or none",
        )
    if isinstance(exc, ContentEncodingError):
        return json_error(status, _UNREADABLE_BODY)
    shown = shown_text(" ".join(str(said).split()), 201)  # it may quote the client's bytes
    return json_error(status, f"the request is not valid HTTP: {shown}" if shown else "bad request")


def _named_as_ours(answer: web.Response) -> web.Response:
    """A parser refusal's answer, which no app's on_response_prepare sees: its `Server` is
    ours (no versions), as every other answer's is (server.protective_headers)."""
    answer.headers["Server"] = SERVER_NAME
    return answer
