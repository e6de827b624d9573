"""What every handler module shares: reading bodies, the API token, and declaring routes.

A route is declared once, with `add_route`: its handler, whether it needs the API token, and
its OpenAPI description (parameters, request and response models), from which
`/openapi.json` is generated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import HttpVersion11, hdrs, web
from prometheus_client import Counter
from pydantic import BaseModel

from common.calls.models import CAMPAIGN_KEY_PREFIX
from common.host_header import address_of, host_name, is_loopback_host
from common.http_body import close_if_body_unread
from common.json_values import unique_keys
from common.repeats import Repeats
from common.settings import DEV_API_SECRET, LIVEKIT_DEV_KEYS, Settings
from common.storage.paging import PAGE_END_PATTERN, Before
from common.text import is_unicode, quoted, shown_text
from handlers.errors import HttpError
from handlers.keys import BODY_READS, QUIET_ROUTES, REFUSALS, ROUTES, SETTINGS

View = Callable[[web.Request], Awaitable[web.StreamResponse]]
logger = logging.getLogger(__name__)

JSON = "application/json"
T = TypeVar("T")
# How often the refusals held back (REFUSALS) are looked at, to say those whose minute is over.
REFUSALS_LOOKED_AT_S = 10.0
# How long a request's body may take to arrive once its headers have.
BODY_READ_TIMEOUT_S = 30.0
# How long an answer may take to be taken by its client, once it is ready.
ANSWER_SEND_TIMEOUT_S = 30.0
# Set on a request whose answer did not reach its client (dropped after ANSWER_SEND_TIMEOUT_S,
# or the client gone): its access line and http_requests_total say `<status>-aborted`.
ANSWER_ABORTED = web.RequestKey("answer_aborted", bool)


def shown_status(request: web.BaseRequest, status: int) -> str:
    """`status` as the access log and http_requests_total show it: `200`, or `200-aborted`
    for an answer that never reached its client (ANSWER_ABORTED)."""
    return f"{status}-aborted" if request.get(ANSWER_ABORTED) else str(status)


def declared_route(request: web.Request) -> str | None:
    """The request's route as declared (`/calls/{call_id}`, never its path's values); None
    for a path no route has."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


@dataclass(frozen=True)
class Reply:
    """One documented answer of a route: why, and the model of its body (None: an error)."""

    description: str
    model: type[BaseModel] | None = None
    content_type: str = JSON
    or_model: type[BaseModel] | None = None  # the body's other form (a batch's answer)
    headers: tuple[str, ...] = ()  # documented response headers, e.g. "Retry-After"


@dataclass(frozen=True)
class RouteDoc:
    method: str
    path: str
    operation_id: str
    summary: str
    replies: dict[int, Reply]
    body: type[BaseModel] | None = None
    # More than 0: the body may also be a JSON array of 1 to this many `body`s.
    batch_of: int = 0
    body_content_type: str = JSON
    # Other content types the body may come in, each with its schema (a CSV upload).
    other_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    parameters: list[dict[str, Any]] = field(default_factory=list)
    protected: bool = False
    # False: a machine's request (LiveKit's webhooks, agents' reports) whose success the call's
    # own log lines tell, or a probe's (health checks, metrics scrapes: a load balancer's and
    # Kubernetes' every few seconds, 17,000 lines a day each); its access-log line is written
    # only at LOG_LEVEL=DEBUG.
    log_success: bool = True


# Replies most protected routes document alike.
UNAUTHORIZED = Reply("CALLS_API_TOKEN is set and the request lacks `Bearer <token>`")
PUBLIC_SECRET = Reply(
    "The embedded sandbox's API secret is public: what it signs is taken from this machine only"
    " (and, with livekit-server --dev's public secret, not from a web page)"
)
# What the refusal of a web page's post signed with livekit-server --dev's secret says.
DEV_PAIR_FROM_A_PAGE = (
    "LIVEKIT_API_SECRET is livekit-server --dev's public one: a web page may sign with it, and"
    " this request came from one"
)
DB_DOWN = Reply("The calls database is unavailable", headers=("Retry-After",))


def query_names(doc: RouteDoc) -> list[str]:
    """The query parameters `doc`'s route takes."""
    return [p["name"] for p in doc.parameters if p.get("in") == "query"]


def refuses_unknown_query(doc: RouteDoc) -> bool:
    """Whether the route answers 400 to a query parameter it does not take: an API read, or
    an API write that takes no query parameter (a write that takes some, a campaign
    upload's, checks its own): `POST /calls/outbound?name=Bob` placed a call to "Guest", the
    name dropped without a word."""
    return doc.protected and (doc.method == "GET" or not query_names(doc))


def refuses_body(doc: RouteDoc) -> bool:
    """Whether the route answers 400 to a body that says something: an API write that takes
    none (a hang-up, an erasure of one call, a campaign's pause, resume or cancel, `DELETE
    /dnc/{number}`, a redelivery). `POST /campaigns/{id}/cancel {"recipients": [1]}`
    canceled every recipient of the campaign for good, its body dropped without a word."""
    return doc.protected and doc.method != "GET" and doc.body is None and not doc.other_bodies


def add_route(
    app: web.Application, doc: RouteDoc, view: View, *, also_at: str | None = None
) -> None:
    """Register `view` for `doc.method doc.path`, behind the API token if `doc.protected`;
    `also_at`: another spelling of the path that answers the same (not described apart)."""
    if refuses_body(doc):
        view = _no_body(view)
    if refuses_unknown_query(doc):
        view = _only_query(view, query_names(doc), in_body=doc.body is not None)
    handler = _expectation_met(requires_token(view) if doc.protected else view)
    for path in (doc.path,) if also_at is None else (doc.path, also_at):
        if doc.method == "GET":  # and HEAD, as every GET route should answer (monitors use it)
            route = app.router.add_get(path, handler, expect_handler=expect_continue)
            routes = [r for r in route.resource or () if r.handler is route.handler]
        else:
            route = app.router.add_route(doc.method, path, handler, expect_handler=expect_continue)
            routes = [route]
        if not doc.log_success:  # a machines' route: its refusals are said once a minute
            app.setdefault(QUIET_ROUTES, set()).update(routes)
            app.setdefault(REFUSALS, Repeats())
    app.setdefault(ROUTES, []).append(doc)


# Set by expect_continue on a request whose `Expect` asks what no route does (anything but
# `100-continue`): its value, for `_expectation_met` to refuse.
EXPECTATION_UNMET = web.RequestKey("expectation_unmet", str)
# Set by expect_continue on a request that asks `Expect: 100-continue`, until its `100
# Continue` is sent: when the route begins to read the body (`arriving_in_time`), never if it
# answers without reading it.
CONTINUE_OWED = web.RequestKey("continue_owed", bool)


async def expect_continue(request: web.Request) -> None:
    """A route's `expect_handler`: `Expect: 100-continue` marked (CONTINUE_OWED), its `100
    Continue` sent only once the route reads the body, after its checks (token, size,
    encodings, rate limits): aiohttp's default sent it at once, before any of them, and a
    client without the token or over the size limit sent its body (curl 524 KB of a 50 MB
    file) before it was refused. Any other expectation is marked (EXPECTATION_UNMET) and
    refused in the route's handler, inside the middlewares. aiohttp's default refused it
    itself, before any of them: a text/plain 417 ("Unknown Expect: foo"), counted in no
    http_requests_total."""
    if request.version != HttpVersion11:  # HTTP/1.0 has no Expect: ignored, as aiohttp does
        return
    expect = request.headers.get(hdrs.EXPECT, "")
    if expect.lower() == "100-continue":
        request[CONTINUE_OWED] = True
    else:
        request[EXPECTATION_UNMET] = expect


async def send_continue_if_owed(request: web.Request) -> None:
    """The `100 Continue` of a request that asked for it, before its body is first read."""
    if request.pop(CONTINUE_OWED, False):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # (aiohttp's) the answer's own bytes are counted apart


def _expectation_met(view: View) -> View:
    """417 for an expectation expect_continue marked, before anything else of the route."""

    async def checked(request: web.Request) -> web.StreamResponse:
        unmet = request.get(EXPECTATION_UNMET)
        if unmet is not None:
            raise HttpError(
                417, f"Expect {quoted(unmet)} cannot be met: only 100-continue is supported"
            )
        return await view(request)

    return checked


def say_refusals_held_back(app: web.Application, *, all_kinds: bool = False) -> None:
    """The refusals of the machines' routes held back (a burst of forged webhooks, then
    none) and not said since, each kind in one line."""
    refusals = app.get(REFUSALS)
    for key, count, over_s in refusals.held_back(all_kinds=all_kinds) if refusals else []:
        logger.warning(
            "%d more like '%s' in the last %.0f s (not logged one by one)", count, key, over_s
        )


async def refusals_said(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: what was held back of a burst of refusals is said once its minute
    is over, and at the stop."""

    async def say() -> None:
        while True:
            await asyncio.sleep(REFUSALS_LOOKED_AT_S)
            say_refusals_held_back(app)

    task = asyncio.create_task(say(), name="refusals-said")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    say_refusals_held_back(app, all_kinds=True)


def _only_query(view: View, known: list[str], *, in_body: bool = False) -> View:
    """An API route refuses a query parameter it does not take: `GET /campaigns?status=running`
    listed every campaign, the filter dropped without a word. `in_body`: the route's fields
    go in its JSON body, and the refusal says so."""
    expected = ", ".join(known) if known else "none"
    if in_body:
        expected += " (its fields go in the JSON body)"

    async def checked(request: web.Request) -> web.StreamResponse:
        unknown = next((name for name in request.query if name not in known), None)
        if unknown is not None:
            raise HttpError(
                400, f"unknown query parameter {quoted(unknown)}; this route takes {expected}"
            )
        return await view(request)

    return checked


# What a route that takes no body reads of one, to tell a body that says nothing (`{}`,
# `null`, what some clients send with every POST) from one that does.
NO_BODY_BYTES = 1024
NO_BODY = (
    "this route takes no body (its path says what it does): nothing was done; send it with"
    " none, or with {}"
)


def _no_body(view: View) -> View:
    """A route that takes no body refuses one that says something (400, before anything is
    done), which it ignored and did as if it were not there. An empty body, `{}` and `null`
    say nothing."""

    async def checked(request: web.Request) -> web.StreamResponse:
        if request.body_exists and not _says_nothing(await _body_if_small(request)):
            raise HttpError(400, NO_BODY)
        return await view(request)

    return checked


async def _body_if_small(request: web.Request) -> bytes | None:
    """The body, if it is at most NO_BODY_BYTES (None: longer, so it says something)."""
    try:
        return await read_body(request, NO_BODY_BYTES)
    except HttpError as exc:
        if exc.status == 413:
            return None
        raise


def _says_nothing(raw: bytes | None) -> bool:
    if raw is None:
        return False
    if not raw.strip():
        return True
    try:
        return decode_json(raw) in (None, {})
    except HttpError:  # not JSON (a form, text): it says something
        return False


def requires_token(view: View) -> View:
    """With CALLS_API_TOKEN set, the request needs `Authorization: Bearer <token>`
    (compared in constant time), or CALLS_API_TOKEN_PREVIOUS's while a rotation lasts;
    without it the server listens on loopback only."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS]
        token = settings.calls_api_token
        if not token:
            refuse_web_pages(request)
            refuse_proxied(request)
        else:
            given_headers = request.headers.getall("Authorization", [])
            if len(given_headers) > 1:
                # Which one counts? Here it was the first, while a proxy in front may read the
                # last (or join them): a wrong token beside a right one passed or failed by
                # their order. Refused, as a repeated Idempotency-Key is.
                raise HttpError(
                    401,
                    "Authorization given more than once: send one",
                    {"WWW-Authenticate": 'Bearer realm="calls"'},
                )
            scheme, _, value = (given_headers[0] if given_headers else "").partition(" ")
            # Header bytes that are not UTF-8 arrive as lone surrogates: surrogateescape gives
            # the bytes back (they never match the token) instead of raising.
            given = value.strip().encode("utf-8", "surrogateescape")
            # Both compared, whichever matches: the time says nothing of which one did.
            matches = [
                hmac.compare_digest(given, taken.encode())
                for taken in (token, settings.calls_api_token_previous)
                if taken
            ]
            valid = scheme.lower() == "bearer" and any(matches)
            if not valid:
                raise HttpError(
                    401,
                    "missing or invalid API token",
                    {"WWW-Authenticate": 'Bearer realm="calls"'},
                )
        return await view(request)

    return guarded


WEB_PAGE_REFUSED = Reply(
    "Without CALLS_API_TOKEN, a request a web page made (Origin of another site, or a Host "
    "that is not this machine's) is refused"
)


# The 403 /openapi.json documents on the API's routes: either refusal.
NO_TOKEN_REFUSED = Reply(
    f"{WEB_PAGE_REFUSED.description}, as is one a reverse proxy passed on (a proxy header such"
    " as X-Forwarded-For, or HTTP/1.0)"
)


def refuse_web_pages(request: web.Request) -> None:
    """Without an API token, being able to connect is the only credential, and a web page
    open in a browser on this machine can connect: a form posted to 127.0.0.1 (a "simple"
    request, no CORS preflight) would place calls, and a page on a name its owner re-points
    at 127.0.0.1 (DNS rebinding) could read the calls back. Such requests are told apart by
    their headers, which a page cannot forge: `Host` must name this machine, and `Origin`
    (which browsers send with every POST) this very server. Clients that are no browser
    (curl, requests, the SDKs) send no Origin and a Host of what they connected to."""
    sign = web_page_sign(request)
    if sign is not None:
        raise HttpError(403, f"{WEB_PAGE_REFUSED.description}: {sign}")


def web_page_sign(request: web.Request) -> str | None:
    """What shows `request` came from a web page (see `refuse_web_pages`), or None."""
    settings = request.app[SETTINGS]
    host = request.headers.get("Host")
    if host is not None and not _names_this_machine(host_name(host), settings):
        return f"Host {host[:100]!r}"
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in _own_origins(host):
        return f"Origin {origin[:100]!r}"
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return "a page of another site sent it"
    return None


PROXIED_REFUSED = (
    "Without CALLS_API_TOKEN the API is open to whatever can connect to this server, and this"
    " request came through a proxy, which opens it to the proxy's clients: set CALLS_API_TOKEN"
    " to serve behind one"
)

# What reverse proxies add to the requests they pass on: Caddy and Traefik add
# X-Forwarded-For/-Host/-Proto by default (Traefik X-Real-Ip, X-Forwarded-Server and -Port
# too), Apache's mod_proxy X-Forwarded-For/-Host/-Server, HAProxy X-Forwarded-For (option
# forwardfor), nginx whatever its config sets (X-Real-IP and X-Forwarded-For in most),
# Cloudflare's tunnel CF-Connecting-IP, caches and CDNs Via. No client of this machine (curl,
# requests, the SDKs) sends any of them.
PROXY_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Server",
    "X-Forwarded-Port",
    "X-Real-IP",
    "X-Client-IP",
    "True-Client-IP",
    "CF-Connecting-IP",
    "Via",
)


def refuse_proxied(request: web.Request) -> None:
    """Without an API token, a request a reverse proxy passed on is refused (403): nginx on
    this machine proxying to 127.0.0.1 sends its upstream's Host (127.0.0.1:8000), so the web
    page check never fired, and the whole API was open to every client of the proxy."""
    sign = proxy_sign(request)
    if sign is not None:
        raise HttpError(403, f"{PROXIED_REFUSED} ({sign})")


def proxy_sign(request: web.Request) -> str | None:
    """What shows `request` came through a reverse proxy, or None: a header of PROXY_HEADERS,
    or HTTP/1.0, which nginx's `proxy_pass` speaks unless told otherwise (and with no header
    of its own: it sends only Host and `Connection: close` by default)."""
    found = next((name for name in PROXY_HEADERS if name in request.headers), None)
    if found is not None:
        return f"it carries {found}"
    if request.version < HttpVersion11:
        return "it is HTTP/1.0, as nginx's proxy_pass sends by default"
    return None


def _names_this_machine(name: str, settings: Settings) -> bool:
    """`name` is loopback, HOST, or PUBLIC_BASE_URL's host (where agents post reports)."""
    return name in settings.own_names or is_loopback_host(name)


def _own_origins(host: str | None) -> tuple[str, ...]:
    return () if host is None else (f"http://{host}".lower(), f"https://{host}".lower())


def signed_by_whom_it_may_be(request: web.Request) -> None:
    """LiveKit's signature proves who sent a request only if the secret is one: the embedded
    sandbox's is in the source. With it, webhooks and agent reports are taken from loopback
    peers only (the sandbox runs in the server's process; a local agent is on this machine),
    or anyone reaching a server listening on HOST=0.0.0.0 could forge them: settle calls, add
    numbers to the do-not-call list, make the server post events to customers' receivers."""
    secret = request.app[SETTINGS].livekit_api_secret
    if secret == LIVEKIT_DEV_KEYS[1]:
        refuse_browsers(request)
        return
    if secret != DEV_API_SECRET:
        return
    if not _from_this_machine(request):
        raise HttpError(403, PUBLIC_SECRET.description)
    # A web page on a name re-pointed at 127.0.0.1 (DNS rebinding) posts from this machine
    # too, and can sign with the public secret: told apart as for the API's routes.
    sign = web_page_sign(request)
    if sign is not None:
        raise HttpError(403, f"{PUBLIC_SECRET.description}; a web page sent this: {sign}")
    # A reverse proxy on this machine posts from loopback for any of its clients.
    proxied = proxy_sign(request)
    if proxied is not None:
        raise HttpError(403, f"{PUBLIC_SECRET.description}; a proxy passed this on ({proxied})")


# Headers every browser of these years sends with a POST, same-origin ones too (the Fetch
# standard's Origin for any method but GET and HEAD; Sec-Fetch-* in Chrome 76+, Firefox 90+,
# Safari 16.4+), and that no server's or SDK's HTTP client sends (LiveKit's Go notifier, our
# agents' aiohttp).
BROWSER_HEADERS = ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest")


def refuse_browsers(request: web.Request) -> None:
    """With livekit-server --dev's public secret (`secret`), refuse (403) what a browser
    sent: a page on a name its owner re-pointed at 127.0.0.1 (DNS rebinding) posts to this
    server as same-origin, may set Authorization, and signed a room_finished that settled a
    live call `no_answer` (200 applied). Its `Host` is the page's name, but the Host check
    the sandbox's secret gets would also refuse LiveKit itself, which posts under whatever
    name its webhook URL gives this machine (host.docker.internal from Docker Desktop); the
    browser's own headers tell it apart."""
    found = next((name for name in BROWSER_HEADERS if name in request.headers), None)
    if found is not None:
        raise HttpError(403, f"{DEV_PAIR_FROM_A_PAGE} (it carries {found})")


def _from_this_machine(request: web.Request) -> bool:
    """The peer is loopback, or the very address it connected to (this machine talking to
    one of its own addresses: the sandbox posting to HOST=192.0.2.7 comes from 192.0.2.7)."""
    peer = address_of(request.remote)
    if peer is None:  # no address (a Unix socket has none)
        return False
    if peer.is_loopback:
        return True
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    local = address_of(str(sockname[0])) if isinstance(sockname, tuple) and sockname else None
    return peer == local


MAX_IDEMPOTENCY_KEY_CHARS = 200


def idempotency_key(request: web.Request) -> str | None:
    """The request's Idempotency-Key (None if it sent none); 400 if it is not one."""
    keys = request.headers.getall("Idempotency-Key", [])
    if not keys:
        return None
    if len(keys) > 1:  # which one would the client retry with?
        raise HttpError(400, "Idempotency-Key given more than once")
    key = keys[0]
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise HttpError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    if not is_unicode(key):  # bytes that are not UTF-8 arrive as lone surrogates
        raise HttpError(400, "Idempotency-Key must be UTF-8 text")
    if key.startswith(CAMPAIGN_KEY_PREFIX):
        raise HttpError(
            400, f"Idempotency-Key may not start with {CAMPAIGN_KEY_PREFIX!r} (campaigns' keys)"
        )
    return key


def idempotency_param(what_repeats_never_do: str) -> dict[str, Any]:
    """The OpenAPI parameter of the Idempotency-Key header."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "Repeats of the same body with the same key get the first answer (also"
        f" after a server crash), never {what_repeats_never_do}; another body with a used key"
        " gets 409",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
    }


# Without a token the server listens on loopback only: every client is this machine, named
# as most were before (a key stored under this name still answers its retries).
LOOPBACK_CLIENT = "127.0.0.1"


def client_identity(request: web.Request) -> str:
    """Who the limits and Idempotency-Keys apply to: the API token's holder, else the client
    address, every loopback one being this machine's. Told apart, a retry under the same key
    from ::1 (HOST=localhost listens on both) or 127.0.0.2 of a call placed from 127.0.0.1
    dialled the number again, and each address had a rate limit of its own."""
    if request.app[SETTINGS].calls_api_token:
        return "token"
    peer = address_of(request.remote)
    if peer is not None and peer.is_loopback:
        return LOOPBACK_CLIENT
    return request.remote or "unknown"


async def read_body(request: web.Request, limit: int, what: str = "request body") -> bytes:
    """The raw body, refused with 413 (before reading it all) when over `limit` bytes, and
    with 408 when it has not all come within BODY_READ_TIMEOUT_S: a client that sends its
    headers and then trickles (or never sends) its body must not hold a connection forever
    (enough of them would use up the server's file descriptors)."""
    refuse_unreadable_body(request, limit, what)
    return await read_checked_body(request, limit, what)


async def read_checked_body(request: web.Request, limit: int, what: str = "request body") -> bytes:
    """`read_body` for a route that called `refuse_unreadable_body` itself (a signed route,
    before its token check): the same reading, without those header checks a second time."""
    length = request.content_length
    # Content-Length counts the bytes on the wire, total_bytes what came out of the decoder:
    # only without a Content-Encoding are they the same (half a gzip body can unpack to more).
    if (
        length is not None
        and "Content-Encoding" not in request.headers
        and request.content.total_bytes >= length
    ):
        return await _read_all(request, limit, what)  # all here already (most requests)
    async with arriving_in_time(request, what):
        return await _read_all(request, limit, what)


@contextlib.contextmanager
def counted_if_unread(counter: Counter) -> Iterator[None]:
    """A signed route's body refused unread (over the limit; slow, or in an encoding not
    undone) counted by `counter`'s result: too_large or unreadable."""
    try:
        yield
    except HttpError as exc:
        counter.labels(result="too_large" if exc.status == 413 else "unreadable").inc()
        raise


def refuse_unreadable_body(request: web.Request, limit: int, what: str = "request body") -> None:
    """What `read_body` refuses before reading a byte: a Content-Encoding or Transfer-Encoding
    it cannot undo (415, 501), a Content-Length over `limit` (413). A signed route says so
    before it checks the signature, which it does before reading the body."""
    refuse_undecoded_encoding(request, what)
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(what, limit)


# The Content-Encodings aiohttp decodes (br and zstd only with their packages; without, its
# parser refuses them itself), and identity, which is none.
DECODED_ENCODINGS = frozenset(("gzip", "deflate", "br", "zstd", "identity", ""))


def refuse_undecoded_encoding(request: web.Request, what: str = "request body") -> None:
    """415 for a body in a Content-Encoding aiohttp leaves as it came (`x-gzip`, `compress`,
    `gzip, gzip`, or two Content-Encoding headers: it decodes the first alone), and 501 for
    a Transfer-Encoding other than chunked (`gzip, chunked`: it undoes the chunking alone):
    their compressed bytes were read as the body, and a gzipped call was refused as "request
    body is not UTF-8 (invalid start byte at byte 1)"."""
    encoding = ", ".join(v.strip() for v in request.headers.getall("Content-Encoding", []))
    if encoding.lower() not in DECODED_ENCODINGS:
        shown = shown_text(encoding, 41)
        raise HttpError(
            415, f"{what}'s Content-Encoding {shown!r} is not supported: send gzip, deflate or none"
        )
    transfer = ", ".join(v.strip() for v in request.headers.getall("Transfer-Encoding", []))
    if transfer and transfer.lower() != "chunked":
        shown = shown_text(transfer, 41)
        raise HttpError(
            501,
            f"{what}'s Transfer-Encoding {shown!r} is not supported: send chunked, or a"
            " Content-Length (and gzip as its Content-Encoding)",
        )


@contextlib.asynccontextmanager
async def arriving_in_time(request: web.Request, what: str = "request body") -> AsyncIterator[None]:
    """Bounds reading a body (however it is read: whole, or part by part) to
    BODY_READ_TIMEOUT_S: 408, and the connection closed, when it runs out; 503 when the
    server stops meanwhile (aiohttp reads nothing more then: see handlers/body_reads.py).
    A client that asked `Expect: 100-continue` is sent its `100 Continue` here, and only here
    (it sends the body on it)."""
    bound = asyncio.timeout(BODY_READ_TIMEOUT_S)
    reads = request.app[BODY_READS]
    await send_continue_if_owed(request)
    try:
        async with bound:
            reads.add(bound)
            yield
    except TimeoutError:
        if not bound.expired():
            raise
        if reads.stopping:
            raise stopping_unread(
                request,
                f"the server is stopping and its {what} had not all arrived: nothing was done;"
                " send it again",
            ) from None
        raise HttpError(
            408, f"{what} did not arrive within {BODY_READ_TIMEOUT_S:g} s", {"Connection": "close"}
        ) from None
    finally:
        reads.discard(bound)


def stopping_unread(request: web.Request, message: str) -> HttpError:
    """The 503 for a request whose body the stopping server will never read (aiohttp reads
    no byte after the signal): its rest marked read, or aiohttp would linger 10 s for it after
    the answer (the stop closes the connection only then)."""
    request.content.feed_eof()
    return HttpError(503, message, {"Connection": "close", "Retry-After": "1"})


@web.middleware
async def answers_sent_in_time(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """An answer the client has not taken within ANSWER_SEND_TIMEOUT_S drops its connection.
    aiohttp waits without end for a client to read: one that sent requests (GET /openapi.json
    needs no token) and read nothing held its connection, the request's task and its answer
    for good, however long after the bounds on headers (75 s) and bodies (30 s); enough of
    them would use up the server's file descriptors."""
    response = await handler(request)
    if isinstance(response, web.Response):
        try:
            async with asyncio.timeout(ANSWER_SEND_TIMEOUT_S):
                await response.prepare(request)
                await response.write_eof()
        except TimeoutError:
            request[ANSWER_ABORTED] = True
            if request.transport is not None:
                request.transport.abort()  # close() would wait for the client to read it all
        except ConnectionError:  # the client left: aiohttp's own write of it says so
            request[ANSWER_ABORTED] = True
    return response


@web.middleware
async def unread_bodies_close(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A body the answer leaves unread (a refusal before the read: 401, 403, 404, 405, 413,
    415, 429; or one part-way: 413) is not read after it, and its connection closes
    (`close_if_body_unread`)."""
    response = await handler(request)
    close_if_body_unread(request, response)
    return response


def _too_large(what: str, limit: int) -> HttpError:
    return HttpError(413, f"{what} is larger than {limit} bytes")


async def discard_body(request: web.Request, limit: int, what: str = "request body") -> None:
    """Read the body to its end, keeping nothing (bounded as `read_body`): a request refused
    before its body was read gets its answer, not a connection reset while it still sends.
    One whose client waits for a `100 Continue` to send it is not read: none is sent."""
    if request.get(CONTINUE_OWED):
        return
    async with arriving_in_time(request, what):
        size = 0
        while chunk := await request.content.read(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise _too_large(what, limit)


async def _read_all(request: web.Request, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise _too_large(what, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _trailing_comma(exc: json.JSONDecodeError) -> str | None:
    """The error of a comma before a closing `}` or `]`, said as such: Python's parser calls
    it "Expecting property name enclosed in double quotes" (or "Expecting value"), which sent
    a user looking for quotes in a body whose only fault was the comma. Python 3.13 says
    "Illegal trailing comma before end of object", its position the comma's, not the `}`'s
    (the comma was then left unnamed, in Python's words)."""
    at = exc.pos
    if exc.doc[at : at + 1] != ",":
        before = exc.doc[:at].rstrip()
        if not before.endswith(","):
            return None
        at = len(before) - 1
    closing = exc.doc[at + 1 :].lstrip()[:1]
    if closing not in ("}", "]"):
        return None
    line, column = exc.doc.count("\n", 0, at) + 1, at - exc.doc.rfind("\n", 0, at)
    return (
        f"a trailing comma at line {line} column {column}, before {closing!r}"
        " (JSON allows none: remove it)"
    )


def decode_json(raw: bytes) -> object:
    """The body's JSON, read as UTF-8 only; 400 with a message for the client otherwise.

    `json.loads` would also take UTF-16 and UTF-32 bytes; RFC 8259 bodies are UTF-8.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpError(
            400, f"request body is not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        return json.loads(text.removeprefix("\ufeff"), object_pairs_hook=unique_keys)
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's own advice is not the client's
            raise HttpError(400, "request body holds a number of over 4300 digits") from None
        comma = _trailing_comma(exc) if isinstance(exc, json.JSONDecodeError) else None
        raise HttpError(400, f"request body is not valid JSON: {comma or exc}") from None
    except RecursionError:  # e.g. 30,000 nested "[" fit in 64 KiB
        raise HttpError(400, "request body is not valid JSON: nested too deeply") from None


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def decode_json_object(request: web.Request, raw: bytes) -> object:
    """`decode_json` for a route that takes one JSON object (`POST /calls/outbound`, `POST
    /dnc`), its 400 saying what to send: an empty body, or a form (`requests.post(url,
    data=...)`, `curl -d phone_number=...`), got Python's "Expecting value: line 1 column 1
    (char 0)", which named neither. A JSON body is read whatever its Content-Type (curl's
    `-d` sends one as a form)."""
    if not raw.strip():
        raise HttpError(
            400, "request body is empty: send a JSON object (Content-Type: application/json)"
        )
    try:
        return decode_json(raw)
    except HttpError as exc:
        if request.content_type in FORM_TYPES:
            exc.message += (
                f" (it was sent as a form, {request.content_type}: send a JSON object,"
                " with Content-Type: application/json)"
            )
        raise


def json_answer(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=model.model_dump_json(by_alias=True),
        status=status,
        content_type=JSON,
        charset="utf-8",  # the body is UTF-8, not \u-escaped: said, for clients that guess
        headers=headers,
    )


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter in [low, high]; 400 with a message otherwise."""
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        # ASCII digits only: int() also reads other scripts' digits, "1_000" and " 12 ".
        if not (text.isascii() and text.removeprefix("-").isdigit()):
            raise ValueError(text)
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high}")
    return value


@dataclass(frozen=True)
class PageLimit:
    """A list's `limit` query parameter: how it is read and how /openapi.json shows it."""

    default: int
    maximum: int

    def of(self, request: web.Request) -> int:
        return int_param(request, "limit", self.default, 1, self.maximum)

    @property
    def doc(self) -> dict[str, Any]:
        return {
            "name": "limit",
            "in": "query",
            "required": False,
            "allowEmptyValue": True,  # limit= is the default
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": self.maximum,
                "default": self.default,
            },
        }


def page_of(found: list[T], limit: int) -> tuple[list[T], T | None]:
    """The page of a list read with `limit + 1` rows: its first `limit`, and the last of them
    when more follow, where the next page starts (None on the last page; with `limit` rows
    read, a page exactly full gave a cursor to an empty page)."""
    if len(found) > limit:
        return found[:limit], found[limit - 1]
    return found, None


# before=, as every list that pages newest first documents it.
BEFORE_PARAM: dict[str, Any] = {
    "name": "before",
    "in": "query",
    "required": False,
    "allowEmptyValue": True,
    "description": "Where the previous page ended: its next_before (or a unix time: all older;"
    " empty: from the newest)",
    "schema": {"type": "string", "pattern": f"^(?:{PAGE_END_PATTERN})?$"},
}


def before_param(request: web.Request, name: str = "before") -> Before | None:
    """Where the previous page ended (paging's before=: the `next_before` it gave, or a unix
    time); 400 otherwise."""
    text = request.query.get(name)
    if not text:
        return None
    before = Before.parse(text)
    if before is None:
        raise HttpError(400, f"{name} must be a next_before token or a unix time (seconds)")
    return before
