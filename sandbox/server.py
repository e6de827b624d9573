"""The sandbox: a loopback stand-in for a LiveKit server.

It speaks LiveKit's Twirp API for the calls this project makes (so ``livekit.api.LiveKitAPI``
works against it unchanged), simulates each outbound SIP call from its dialled number (see
:mod:`sandbox.scenarios`) and posts LiveKit's signed webhooks to ``webhook_url``.

    sandbox = Sandbox(api_key=KEY, api_secret=SECRET, webhook_url="http://127.0.0.1:8000/...")
    await sandbox.start()
    lkapi = LiveKitAPI(url=sandbox.url, api_key=KEY, api_secret=SECRET)
    ...
    await sandbox.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.json_format import MessageToDict
from livekit.api.access_token import TokenVerifier

from common.http_body import close_if_body_unread
from common.masking import redact
from common.repeats import Repeats
from common.text import shown_text
from sandbox import twirp
from sandbox.agent import AgentReports
from sandbox.rooms import RoomRegistry, SandboxRoom
from sandbox.services import REQUEST_ID_HEADER, CallContext, Dial, LiveKitServices, Route
from sandbox.twirp import Encoding, TwirpError
from sandbox.util import web_page_sign
from sandbox.webhooks import WebhookSender

logger = logging.getLogger(__name__)

TWIRP_PREFIX = "/twirp/"
MAX_RECORDED_REQUESTS = 10_000
SHUTDOWN_TIMEOUT_S = 1.0  # in-flight requests get this long when the sandbox stops
MAX_LOGGED_CHARS = 300  # of a refused request's path and message in its line (as the access log)


@dataclass(frozen=True)
class RecordedRequest:
    """One Twirp call the sandbox received.

    ``body`` is the decoded request as ``MessageToDict(..., preserving_proto_field_name=True)``
    (e.g. ``body["sip_call_to"]``), empty when it could not be decoded. ``authorized`` is True
    when the token was valid and carried the method's grant.
    """

    service: str
    method: str
    body: dict[str, Any]
    authorized: bool
    status: int
    error_code: str | None
    encoding: Encoding | None
    request_id: str | None

    @property
    def auth_ok(self) -> bool:
        """Alias of ``authorized``."""
        return self.authorized


@dataclass
class Fault:
    """A fault the sandbox plays on requests to one method, for tests of our error handling.

    The request is authenticated, routed and decoded as usual, then the sandbox waits
    ``delay_s`` (a slow LiveKit: the method still runs afterwards, as a real server finishes a
    request whose client gave up) and, with ``error``, answers that Twirp error instead of
    running the method. ``times`` limits how many requests it applies to (None: all), and
    ``when`` picks them by their decoded body (proto field names), e.g. by ``sip_call_to``.
    """

    delay_s: float = 0.0
    error: TwirpError | None = None
    times: int | None = None
    when: Callable[[dict[str, Any]], bool] | None = None
    applied: int = field(default=0, init=False)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.applied >= self.times


# Where a livekit-agents worker registers (its websocket), and the header of the sandbox's
# answer there, which tells the worker it reached the sandbox.
AGENT_PATH = "/agent"
SANDBOX_HEADER = "X-Sandbox"
NO_AGENT_WORKERS = (
    "an agent worker tried to register (GET /agent): the sandbox hosts no agent worker, it plays"
    " the agent's part itself; point the worker's LIVEKIT_URL at a real LiveKit server"
    " (`livekit-server --dev` locally) and the call server's at the same one"
)


# What every answer's `Server` header says: aiohttp's default named Python's version and its
# own (`Python/3.11 aiohttp/3.14.5`) to whoever reached the sandbox (`--host 0.0.0.0`).
SERVER_NAME = "livekit-sandbox"


async def _named_without_versions(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_NAME


class Sandbox:
    """A LiveKit stand-in on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        webhook_url: str | None,
        time_scale: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be >= 0")
        self.host = host
        self._refusals = Repeats()  # a page can send them in a loop: said once a minute
        self.port = port
        self.time_scale = time_scale
        # Bounded: a long `make run` keeps the latest requests, not every one since start.
        self.requests: deque[RecordedRequest] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.faults: dict[str, Fault] = {}  # by method name, e.g. "CreateSIPParticipant"
        self._verifier = TokenVerifier(api_key, api_secret)
        self._webhooks = WebhookSender(
            url=webhook_url, api_key=api_key, api_secret=api_secret, time_scale=time_scale
        )
        # Reports of our agent on the calls the sandbox plays (sandbox/agent.py), sent as the
        # agent sends them.
        self._reports = AgentReports(api_key=api_key, api_secret=api_secret, time_scale=time_scale)
        self._registry = RoomRegistry(self._webhooks.send)
        self._services = LiveKitServices(
            self._registry, time_scale=time_scale, reports=self._reports
        )
        self._routes: dict[str, Route[Any]] = self._services.routes()
        self._runner: web.AppRunner | None = None
        self._bound_port: int | None = None

    # -- public API ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: pass it to ``livekit.api.LiveKitAPI(url=...)``."""
        if self._bound_port is None:
            raise RuntimeError("Sandbox.start() has not been awaited")
        return f"http://{self.host}:{self._bound_port}"

    @property
    def dials(self) -> list[Dial]:
        """Every SIP call placed so far (the last DIAL_LOG_SIZE), oldest first."""
        return list(self._services.dials)

    @property
    def webhook_url(self) -> str | None:
        """Where webhooks go; may be set after start (e.g. once the app's port is known)."""
        return self._webhooks.url

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self._webhooks.url = url

    @property
    def webhooks_delivered(self) -> int:
        """Webhook posts our server answered (any status below 500 but 429)."""
        return self._webhooks.delivered

    @property
    def webhooks_refused(self) -> int:
        """Webhook posts answered with a 4xx (counted in ``webhooks_delivered`` too)."""
        return self._webhooks.refused

    @property
    def reports_delivered(self) -> int:
        """Agent reports our server answered (any status below 500 but 429)."""
        return self._reports.delivered

    @property
    def reports_refused(self) -> int:
        return self._reports.refused

    @property
    def webhooks_dropped(self) -> int:
        """Webhooks given up after every retry failed."""
        return self._webhooks.dropped

    @property
    def reports_dropped(self) -> int:
        """Agent reports given up after every retry failed."""
        return self._reports.dropped

    def inject(
        self,
        method: str,
        *,
        delay_s: float = 0.0,
        error: TwirpError | None = None,
        times: int | None = None,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Fault:
        """Play a :class:`Fault` on requests to ``method`` (e.g. ``"CreateDispatch"``)."""
        fault = Fault(delay_s=delay_s, error=error, times=times, when=when)
        self.faults[method] = fault
        return fault

    async def _play_fault(self, method: str, body: dict[str, Any]) -> None:
        fault = self.faults.get(method)
        if fault is None or fault.exhausted or (fault.when is not None and not fault.when(body)):
            return
        fault.applied += 1
        if fault.delay_s > 0:
            await asyncio.sleep(fault.delay_s)
        if fault.error is not None:
            error = fault.error
            raise TwirpError(error.code, error.msg, error.meta)

    @property
    def rooms(self) -> dict[str, SandboxRoom]:
        """Live rooms by name."""
        return self._registry.rooms

    async def start(self) -> None:
        if self._runner is not None:
            return
        await self._webhooks.start()
        await self._reports.start()
        app = web.Application(middlewares=[_unread_bodies_close, self._refuse_web_pages])
        app.on_response_prepare.append(_named_without_versions)
        app.router.add_get("/", self._handle_root)
        app.router.add_get(AGENT_PATH, self._handle_agent_worker)
        app.router.add_route("*", TWIRP_PREFIX + "{path:.*}", self._handle_twirp)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            await self._webhooks.close()
            await self._reports.close()
            raise
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        logger.warning(
            "SANDBOX MODE: no real phone is called; LiveKit stand-in on %s, webhooks to %s",
            self.url,
            self.webhook_url or "(nowhere)",
        )

    async def stop(self) -> None:
        """Cancel all calls and pending webhook deliveries and close the server (idempotent)."""
        tasks = self._services.cancel_all()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._webhooks.close()
        await self._reports.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            logger.info("sandbox on port %s stopped", self._bound_port)

    async def stop_posting(self) -> None:
        """Post nothing more to the server (LiveKit's webhooks, the agent's reports), cancelling
        what is pending; the calls play on. For a server about to close: a connection of ours
        it accepted just as it stopped listening is one asyncio makes a transport for after
        the server closed those it knew, left open."""
        await self._webhooks.close()
        await self._reports.close()

    async def wait_idle(self, timeout: float) -> None:
        """Wait until every call simulation and webhook delivery is done.

        Raises ``TimeoutError`` if that takes longer than ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while pending := (
                self._services.pending() | self._webhooks.pending() | self._reports.pending()
            ):
                await asyncio.wait(pending)

    # -- HTTP ------------------------------------------------------------------------------

    @web.middleware
    async def _refuse_web_pages(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        """The sandbox's key pair is in the source, so a signature proves nothing here; what
        keeps others out is that it listens on loopback. A web page open on this machine can
        reach loopback too: on a name its owner re-points at 127.0.0.1 (DNS rebinding) it
        could list every live call's config and end or re-settle calls. Its requests carry an
        `Origin` (browsers send one with every POST) and that name as `Host`; LiveKit's SDKs
        send neither. So: no Origin, and a Host that is an address, a loopback name, or the
        host the sandbox was told to listen on."""
        sign = web_page_sign(request.headers.get("Host"), request.headers.get("Origin"), self.host)
        if sign is not None:
            if (more := self._refusals.due("web page")) is not None:
                logger.warning("sandbox: a web page's request refused (%s)%s", sign, more)
            return TwirpError("permission_denied", f"a web page's request: {sign}").to_response()
        result: web.StreamResponse = await handler(request)
        return result

    async def _handle_root(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def _handle_agent_worker(self, request: web.Request) -> web.Response:
        """An agent worker registering here (`python -m agent start` with LIVEKIT_URL on the
        sandbox): the sandbox plays the agent's part itself and hosts no worker. It got
        aiohttp's bare 404 and retried it for ~2 minutes, each side saying nothing of why.
        Said once a minute here; the header lets the worker's start tell it (agent/cli.py)."""
        if (more := self._refusals.due("agent worker")) is not None:
            logger.warning("sandbox: %s%s", NO_AGENT_WORKERS, more)
        return web.Response(
            status=404, text=NO_AGENT_WORKERS + "\n", headers={SANDBOX_HEADER: "no-agent-workers"}
        )

    async def _handle_twirp(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        service, _, method = path.partition("/")
        ctx = CallContext(claims=None, request_id=request.headers.get(REQUEST_ID_HEADER))
        encoding: Encoding | None = None
        body: dict[str, Any] = {}
        error: TwirpError | None = None
        try:
            # As in livekit-server, the auth middleware runs before twirp routes the request.
            ctx.claims = twirp.authenticate(request.headers.get("Authorization"), self._verifier)
            if request.method != "POST":
                raise TwirpError(
                    "bad_route", f"unsupported method {request.method} (only POST is allowed)"
                )
            route = self._routes.get(path)
            if route is None:
                raise TwirpError("bad_route", f'no handler for path "{TWIRP_PREFIX}{path}"')
            encoding = twirp.encoding_for(request.headers.get("Content-Type"))
            message = route.request_type()
            twirp.decode_body(await request.read(), encoding, message)
            body = MessageToDict(message, preserving_proto_field_name=True)
            await self._play_fault(method, body)
            reply = await route.handler(ctx, message)
            response = twirp.encode_response(reply, encoding)
        except TwirpError as exc:
            error = exc
            response = exc.to_response()
        except web.HTTPException as exc:  # the body over client_max_size (1 MiB): 413
            error = TwirpError("malformed", exc.reason)
            response = web.Response(status=exc.status, text=exc.text, content_type="text/plain")
        except Exception:
            logger.exception("sandbox: %s/%s failed", service, method)
            error = TwirpError("internal", "internal error")
            response = error.to_response()
        self.requests.append(
            RecordedRequest(
                service=service,
                method=method,
                body=body,
                authorized=ctx.authorized,
                status=response.status,
                error_code=error.code if error else None,
                encoding=encoding,
                request_id=ctx.request_id,
            )
        )
        if error is None:
            logger.debug("sandbox %s/%s -> %d", service, method, response.status)
            return response
        # Anyone on this host may post refused requests by the thousand, with paths of
        # kilobytes: said once a minute per route, status and code (unknown routes as one), cut.
        known = path if path in self._routes else "(unknown route)"
        if (more := self._refusals.due(f"{known} {response.status} {error.code}")) is not None:
            logger.info(
                "sandbox %s -> %d %s: %s%s",
                _logged(path),
                response.status,
                error.code,
                _logged(error.msg),
                more,
            )
        return response


def _logged(text: str) -> str:
    """A refused request's path or message as its line shows it: numbers masked before it is
    cut (cut first, a number across the cut kept its first digits: 6 of them are no number
    to mask), call ids kept whole, on one line of at most MAX_LOGGED_CHARS characters."""
    return shown_text(redact(text[: 4 * MAX_LOGGED_CHARS]), MAX_LOGGED_CHARS)


@web.middleware
async def _unread_bodies_close(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """A body left unread (a request refused on its token or as a web page's, a path no
    route has, a body over the limit) is not read after the answer, nor unpacked: this
    port's loop is the server's, and a 1 MB gzip of zeros posted here held every call,
    webhook and probe of the server for 3 s as aiohttp unpacked its 1 GB (handlers/http.py's
    unread_bodies_close, for the API's port)."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:  # aiohttp's own 404 and 405: answers too
        close_if_body_unread(request, exc)
        raise
    close_if_body_unread(request, response)
    return response
