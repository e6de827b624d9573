"""The outbound-calling HTTP service: `create_app(settings, ...)` and `main()`. Wiring only.

Run it with `make run`. Without LIVEKIT_URL it starts the embedded loopback LiveKit sandbox
next to itself, so it works with no credentials and no phone is ever called.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import resource
import signal
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt
from aiohttp import web
from aiohttp.abc import AbstractResolver
from livekit import api
from yarl import URL

from common.background import kept_running
from common.calls.events import EventDispatcher
from common.calls.models import CallEvent
from common.calls.phone import load_all_metadata
from common.calls.request import MAX_DURATION_RANGE, RINGING_TIMEOUT_RANGE, RequestRules
from common.calls.service import (
    WEBHOOK_DNS_TIMEOUT_S,
    CallService,
    count_events,
    log_status_change,
    resolve_webhook_host,
    warn_of_busy_runs,
    warn_of_trunk_faults,
)
from common.calls.unreported import ReportsRefused, warn_of_unreported_runs
from common.campaigns.scheduler import CampaignScheduler
from common.campaigns.service import (
    CampaignService,
    log_campaign_completed,
    pause_on_agent_faults,
    pause_on_trunk_faults,
)
from common.config_store.store import SQLITE_HEADER, ConfigStore
from common.contracts import REPORTS_PATH
from common.host_header import is_loopback_host
from common.http_body import read_capped
from common.livekit.client import (
    REQUEST_TIMEOUT_S,
    LiveKitError,
    LiveKitOverLimit,
    check_reachable,
    create_client,
    create_session,
)
from common.metrics import Metrics
from common.notify.deliveries import WebhookSender
from common.notify.guard import AddressRefused, PooledResolver, UnsafeWebhookUrl
from common.notify.lookups import NameLookups
from common.own_threads import OwnThreads
from common.repeats import AcceptFailures, Repeats
from common.settings import (
    Settings,
    SettingsError,
    checkout_unread_warning,
    configure_logging,
    dotenv_warnings,
    ipv6_only_warning,
    load_settings,
    others_may_reach,
)
from common.storage.base import (
    CallStore,
    DatabaseAccessDenied,
    DatabaseError,
    DatabaseLocked,
    DatabaseNewer,
)
from common.storage.selected import open_store
from handlers import (
    access_log,
    calls,
    campaigns,
    deliveries,
    dnc,
    health,
    openapi,
    reports,
    webhooks,
)
from handlers.body_reads import BodyReads
from handlers.errors import (
    PARSER_ERRORS_AS_JSON,
    SERVER_NAME,
    answer_parser_errors_as_json,
    errors_as_json,
    refuse_cut_compressed_bodies,
)
from handlers.http import (
    REFUSALS_LOOKED_AT_S,
    answers_sent_in_time,
    declared_route,
    refusals_said,
    shown_status,
    unread_bodies_close,
)
from handlers.in_flight import IN_FLIGHT, InFlight, tracked_in_flight
from handlers.keys import (
    BODY_READS,
    CALLS,
    CAMPAIGNS,
    CONFIG,
    EVENTS,
    LIVEKIT_URL,
    METRICS,
    REPORTS_REFUSED,
    SETTINGS,
    STORE,
    WEBHOOKS,
)

if TYPE_CHECKING:
    from sandbox import Sandbox

logger = logging.getLogger("server")

# On SIGTERM the server stops listening, then waits this long for requests in flight. A call
# being placed may wait on LiveKit twice (dispatch, then SIP), each up to REQUEST_TIMEOUT_S.
# (aiohttp ignores bytes arriving after the signal: a request still uploading its body when it
# comes is answered 503 at once, handlers/body_reads.py; it never reached our side effects.)
SHUTDOWN_TIMEOUT_S = 2 * REQUEST_TIMEOUT_S + 5
# Then, how long the stop's own work (the reaper and scheduler cancelled, claims given back,
# the sandbox's calls settled, the database closed) may wait on the database, all steps
# together: on a PostgreSQL that did not answer each step waited 10-15 s, and a SIGTERM took
# 36-46 s, past Kubernetes' 30 s grace. A database that answers needs milliseconds.
STOP_DATABASE_WAIT_S = 5.0
# Once stopped, how long the threads the interpreter joins at exit get to end by themselves.
STUCK_THREAD_WAIT_S = 2.0

SANDBOX: web.AppKey[Any] = web.AppKey("sandbox")
STORE_GIVEN = web.AppKey("store_given", bool)
CAMPAIGN_CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("campaign_clock")


class StartupError(Exception):
    """A resource the app needs could not be set up; the message says which and what to do."""


# Methods counted by name in http_requests_total; any other is counted as "other". aiohttp's
# pure-Python parser (AIOHTTP_NO_EXTENSIONS, a platform without its C one) takes any token as
# a method: 20,000 requests with made-up methods added 33 MB and 20,000 series for good, and
# made /metrics 43 MB (0.9 s of the server's one thread per scrape).
COUNTED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def count_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    route = declared_route(request) or "unmatched"
    method = request.method if request.method in COUNTED_METHODS else "other"
    code = shown_status(request, response.status)  # 200-aborted: it never reached its client
    request.app[METRICS].requests.labels(route, method, code).inc()
    return response


# Answers carry phone numbers and transcripts: no cache (a proxy's, a browser's) keeps them,
# and no browser guesses a type other than the one they say.
PROTECTIVE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


async def protective_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in PROTECTIVE_HEADERS.items():
        response.headers.setdefault(name, value)
    # aiohttp's own (set before this hook) said `Python/3.11 aiohttp/3.14.5` on every answer,
    # to anyone who asked: which published flaws of those versions to try.
    response.headers["Server"] = SERVER_NAME


async def _storage(app: web.Application) -> AsyncIterator[None]:
    if STORE not in app:
        try:
            app[STORE] = store = await open_store(app[SETTINGS])
            try:  # a database that opens but takes no write (a read-only file) stops start-up
                await store.probe_write(app[SETTINGS].instance_name)
            except DatabaseError:
                await store.close()
                raise
        except DatabaseError as exc:
            raise StartupError(_unusable_database(app[SETTINGS], exc)) from exc
    yield
    if not app[STORE_GIVEN]:
        await app[STORE].close()


def _unusable_database(settings: Settings, exc: DatabaseError) -> str:
    """Why start-up stops, naming the setting to change: the operator's fix is there."""
    if isinstance(exc, DatabaseNewer):  # a rollback: another file would lose every row
        return (
            f"the calls database cannot be used: {exc}: run the release that migrated it, or"
            " restore the copy taken before the upgrade (another, empty database would hold"
            " no do-not-call list, no campaigns and no idempotency keys)"
        )
    if settings.database_url:
        return f"the calls database (DATABASE_URL) cannot be used: {exc}"
    if isinstance(exc, DatabaseAccessDenied):  # it says whose files, and what to do
        return f"the calls database (CALLS_DB_PATH={settings.calls_db_path}) cannot be used: {exc}"
    if isinstance(exc, DatabaseLocked):  # the file is fine: another one would hold no calls
        return (
            f"the calls database (CALLS_DB_PATH={settings.calls_db_path}) cannot be used:"
            f" {exc} (another server on the same file, or a `sqlite3` shell or backup tool"
            " holding a write: stop it, or start again once it is done)"
        )
    return (
        f"the calls database (CALLS_DB_PATH={settings.calls_db_path}) cannot be used: {exc}"
        " (set CALLS_DB_PATH to a file this server can create and write)"
    )


async def _phone_metadata(_app: web.Application) -> AsyncIterator[None]:
    """Every region's phone number metadata, before any request needs it (load_all_metadata:
    one phonenumbers failed to load at a request, under a descriptor shortage, hung the
    server for good)."""
    try:
        load_all_metadata()
    except OSError as exc:
        raise StartupError(f"cannot load the phone number metadata (phonenumbers): {exc}") from exc
    yield


async def _config_writable(app: web.Application) -> AsyncIterator[None]:
    """config.json must be writable before the server serves (the readiness probe's check,
    and a write of config.json if it is there): a CONFIG_PATH whose directory cannot be
    created failed every call, one that is a directory did too, a device was moved aside and
    replaced, and one that cannot be replaced (`chattr +i`, a file bind-mounted into a
    container) started, said it was ready and failed every call."""
    path = app[SETTINGS].config_path
    try:
        await app[CONFIG].probe_writable_async(rewrite=True)
    except OSError as exc:
        # what a plain "Permission denied" is about: config.json, or its directory
        reason = (exc.strerror or str(exc)) + app[CONFIG].advice(exc)
        raise StartupError(
            f"config.json ({path}) cannot be written: {reason} (set CONFIG_PATH)"
        ) from exc
    yield


async def _events(app: web.Application) -> AsyncIterator[None]:
    """The event dispatcher and its subscribers; the customer webhook sender when enabled."""
    settings = app[SETTINGS]
    events = EventDispatcher(app[STORE], clock=time.time, lease_s=settings.claim_lease_s)
    events.subscribe("log", log_status_change)
    events.subscribe("trunk faults", warn_of_trunk_faults(Repeats()))
    events.subscribe("busy runs", warn_of_busy_runs(Repeats()))
    unreported = warn_of_unreported_runs(Repeats(), settings.report_url, app[REPORTS_REFUSED])
    events.subscribe("unreported runs", unreported)
    events.subscribe("log campaigns", log_campaign_completed)
    events.count_new(count_events(app[METRICS]))
    sender: WebhookSender | None = None
    if settings.calls_webhook_secret is not None:
        sender = WebhookSender(app[STORE], settings, app[METRICS])
        app[WEBHOOKS] = sender
        events.subscribe("webhooks", _wake(sender))
        await sender.start()
    else:
        await _warn_unsent_deliveries(app[STORE])
    app[EVENTS] = events
    events.start()
    yield
    await events.stop()
    if sender is not None:
        await sender.stop()


async def _warn_unsent_deliveries(store: CallStore) -> None:
    """Customer webhooks turned off (no CALLS_WEBHOOK_SECRET) with deliveries still pending
    from when they were on: nothing sends them, and they showed `pending` for good, unsaid."""
    try:
        pending = await store.count_pending_deliveries()
    except DatabaseError:
        return  # the database's own errors are said where they matter
    if pending:
        logger.warning(
            "%d customer webhook deliveries are pending, but CALLS_WEBHOOK_SECRET is not set:"
            " nothing sends them (set it again to send them)",
            pending,
        )


def _wake(sender: WebhookSender) -> Callable[[CallEvent], Awaitable[None]]:
    """Events committed with their deliveries: the sender looks for them at once."""

    async def wake(event: CallEvent) -> None:
        sender.wake(event.call_id)

    return wake


def _bind_error(exc: OSError) -> str:
    """What a failed bind says, as the server's own port says it (`Address already in use`):
    asyncio's strerror repeats the address, lower-cased ("error while attempting to bind on
    address ('127.0.0.1', 7880): address already in use")."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


async def _start_sandbox(settings: Settings) -> Sandbox:
    from sandbox import Sandbox  # only loaded when it is used

    sandbox = Sandbox(
        api_key=settings.livekit_api_key,
        api_secret=settings.livekit_api_secret,
        webhook_url=settings.webhook_url,
        time_scale=settings.sandbox_time_scale,
        port=settings.sandbox_port,
    )
    try:
        await sandbox.start()
    except OSError as exc:
        raise StartupError(_sandbox_unbindable(settings, exc)) from exc
    return sandbox


def _port_beside(settings: Settings) -> str:
    """The settings that run a server beside one holding PORT and the sandbox's port: 8000
    taken, PORT=8001 SANDBOX_PORT=0 (README's first case); 8001 taken, PORT=8002 ..."""
    port = settings.port + 1 if settings.port < 65535 else settings.port - 1
    return f"PORT={port} SANDBOX_PORT=0"


def _sandbox_unbindable(settings: Settings, exc: OSError) -> str:
    return (
        f"the embedded sandbox cannot listen on 127.0.0.1:{settings.sandbox_port}: "
        f"{_bind_error(exc)} (set SANDBOX_PORT, 0 for any free port, or LIVEKIT_URL for a"
        " real LiveKit)"
    )


def check_sandbox_port(settings: Settings) -> None:
    """SANDBOX_PORT taken (another checkout's server on 7880, README's first case) was found
    when the app started the sandbox, after it had opened the database and started its
    customer webhook sender: aiohttp does not clean up a start-up that fails, so the process
    exited with the calls database never closed (calls.db-wal and -shm left beside it) and
    the deliveries its sender had claimed held for CLAIM_LEASE_S. Tried here first, before
    anything starts (the sandbox's own bind still says it if the port is taken meanwhile)."""
    if not settings.uses_sandbox or settings.sandbox_port == 0:
        return
    try:
        probe = _listening(
            socket.AF_INET, socket.SOCK_STREAM, 0, ("127.0.0.1", settings.sandbox_port)
        )
    except OSError as exc:
        raise StartupError(_sandbox_unbindable(settings, exc)) from exc
    probe.close()


async def _say_if_livekit_answers(lkapi: api.LiveKitAPI, url: str) -> None:
    """At start-up, one authenticated request to the real LiveKit: a wrong key, a URL with a
    path, a host that does not answer (the .env.example placeholder) started without a word,
    and the first call said it (probe AO). Not a refusal: LiveKit may be down for a while,
    and /readyz says so meanwhile."""
    try:
        await check_reachable(lkapi)
    except LiveKitOverLimit as exc:
        # It answered: "check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET" sent its
        # operator to settings that were right (a 429 is LiveKit's limit on the project's
        # requests or calls), while calls were refused for a reason the line did not say.
        logger.warning(
            "LiveKit at %s answers, but over a limit of its own (%s): calls placed meanwhile"
            " are answered 503 with its Retry-After, until it has room again; /readyz stays"
            " ready and says so. Not a setting of this server: wait, or ask LiveKit for a"
            " higher limit",
            url,
            exc.reason,
        )
    except LiveKitError as exc:
        logger.warning(
            "LiveKit at %s did not answer as it should at start-up (%s): calls fail until it"
            " does; check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
            url,
            exc.reason,  # not str(exc): "LiveKit did not answer the readiness probe: readiness
            # probe: LiveKit unreachable", the probe twice inside a line that says it already
        )
    else:
        logger.info("LiveKit at %s answers", url)


# How long start-up keeps asking whether PUBLIC_BASE_URL leads to a calls server (a load
# balancer may send nothing to this server, its only one, before its health checks pass),
# and how often.
REPORT_URL_CHECK_FOR_S = 120.0
REPORT_URL_CHECK_EVERY_S = 10.0
REPORT_URL_TIMEOUT_S = 5.0
# What of its answer is read: a calls server's JSON error is a few hundred bytes. Whatever
# else answers there (a page, a stream that never ends) was read whole, as fast as it came,
# for REPORT_URL_TIMEOUT_S, into the server's memory.
REPORT_URL_MAX_BYTES = 64 * 1024


async def report_url_refusal(url: str, session: aiohttp.ClientSession) -> tuple[str, bool] | None:
    """Why the agents' reports URL does not lead to a calls server's reports route as this
    server finds it (a GET, which that route answers 405 with its JSON error, doing nothing),
    and whether that is for good (a calls server answering that it has no such route);
    None when it does."""
    try:
        async with session.get(
            url,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REPORT_URL_TIMEOUT_S),
        ) as response:
            status = response.status
            location = response.headers.get("Location", "")
            allow = response.headers.get("Allow", "")
            # To its end or REPORT_URL_MAX_BYTES, piece by piece: one read(n) gives what has
            # come so far, and an answer in pieces (a proxy passing on what it gets as it
            # comes) was cut at its first, read as no JSON, and a calls server behind it said
            # to be none.
            body = await read_capped(response, REPORT_URL_MAX_BYTES)
            try:
                doc = json.loads(body)
            except (ValueError, RecursionError):
                doc = None
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"it cannot be reached ({type(exc).__name__}: {str(exc)[:200]})", False
    ours = isinstance(doc, dict) and doc.get("status") == "error"
    if ours and status == 405 and allow == "POST":
        return None
    if ours and status == 404:
        path = URL(url).path
        return (
            f"a calls server answers there that has no route {path} (a proxy in front passes"
            " PUBLIC_BASE_URL's path on rather than taking it off: take it off there, or give"
            " PUBLIC_BASE_URL no path)",
            True,
        )
    if 300 <= status < 400:
        return (
            f"it redirects (HTTP {status} to {location[:200]}), and agents do not follow"
            " redirects: set PUBLIC_BASE_URL to where it leads",
            True,
        )
    return f"it answers HTTP {status}, not as a calls server does", False


def api_reached_through(settings: Settings) -> str | None:
    """PUBLIC_BASE_URL, when it may open the API to others: no CALLS_API_TOKEN, and a host
    that is not this machine's loopback (agents and LiveKit reach the server through whatever
    forwards that name to it). None otherwise."""
    if settings.calls_api_token or settings.public_base_url is None:
        return None
    host = URL(settings.public_base_url).host or ""
    return None if is_loopback_host(host.rstrip(".")) else settings.public_base_url


# How many times start-up asks the API through PUBLIC_BASE_URL while nothing answers it (a
# connection that failed, a timeout, a 5xx), REPORT_URL_CHECK_EVERY_S apart.
API_OPEN_TRIES = 3


async def api_open_through(base_url: str, session: aiohttp.ClientSession) -> bool | None:
    """Whether the API, without a token, lists calls to a request sent through `base_url`
    (PUBLIC_BASE_URL): True when it does; False when it does not (it refuses what a reverse
    proxy passes on: a proxy header, HTTP/1.0; or what forwards that URL answers itself, a
    404 page); None when nothing answered (the connection failed, a timeout, a 5xx)."""
    try:
        async with session.get(
            f"{base_url}/calls?limit=1",
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=REPORT_URL_TIMEOUT_S),
        ) as response:
            status = response.status
            body = await read_capped(response, REPORT_URL_MAX_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        return None
    if status >= 500:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return status == 200 and isinstance(doc, dict) and isinstance(doc.get("calls"), list)


async def say_if_api_open_through(base_url: str, session: aiohttp.ClientSession) -> None:
    """An ERROR when the API answers through PUBLIC_BASE_URL without a token. Without one the
    API is open to this machine's programs, and refuses what a reverse proxy passes on by its
    headers; a forwarder that adds none (a TLS or TCP one: stunnel, an ssh tunnel, nginx
    passing `Host` on over HTTP/1.1 without X-Forwarded-For) opened it to everyone who
    reaches PUBLIC_BASE_URL (measured: a TCP forwarder in front, a client elsewhere listed
    every call, numbers and all, and placed one), and start-up said only that the API was
    open to every program on this machine. Asked API_OPEN_TRIES times while nothing answers
    (asked once, a gateway's 502 or a timeout at that moment left it unsaid for good)."""
    for tries_left in range(API_OPEN_TRIES - 1, -1, -1):
        answered = await api_open_through(base_url, session)
        if answered is not None or not tries_left:
            break
        await asyncio.sleep(REPORT_URL_CHECK_EVERY_S)
    if answered:
        logger.error(
            "CALLS_API_TOKEN is not set, and the API answers at PUBLIC_BASE_URL %s (GET"
            " %s/calls listed calls): what forwards it to this server adds no proxy header"
            " (X-Forwarded-For, Forwarded, Via...) the API refuses its requests by, so whoever"
            " reaches %s reads every call and places calls; set CALLS_API_TOKEN",
            base_url,
            base_url,
            base_url,
        )


async def _say_where_reports_lead(url: str, api_base: str | None = None) -> None:
    """At start-up, whether PUBLIC_BASE_URL leads to a calls server: set wrong (a proxy that
    keeps its path prefix, a host or port mistyped, a redirect to https), every report of
    every call (answer, transcript, analysis) was refused or lost on the agents' hosts, and
    this server said nothing of it. Asked again for REPORT_URL_CHECK_FOR_S, a load balancer
    may not send here yet; said once, a WARNING (this server may reach it otherwise than the
    agents do), or an INFO line once it leads to a calls server. `api_base`
    (api_reached_through): then whether the API answers there without a token."""
    deadline = time.monotonic() + REPORT_URL_CHECK_FOR_S
    async with aiohttp.ClientSession() as session:
        while True:
            refusal = await report_url_refusal(url, session)
            if refusal is None:
                logger.info("agents' reports go to %s, which leads to a calls server", url)
                if api_base is not None:
                    await say_if_api_open_through(api_base, session)
                return
            why, for_good = refusal
            if for_good or time.monotonic() + REPORT_URL_CHECK_EVERY_S > deadline:
                break
            await asyncio.sleep(REPORT_URL_CHECK_EVERY_S)
    logger.warning(
        "agents' reports go to %s (PUBLIC_BASE_URL + %s), but from this server %s: unless"
        " the agents' hosts reach it otherwise, every call's answer, transcript and analysis"
        " are lost",
        url,
        REPORTS_PATH,
        why,
    )


async def _report_url_checked(app: web.Application) -> AsyncIterator[None]:
    """With PUBLIC_BASE_URL set for a real LiveKit, `_say_where_reports_lead` in the
    background (on the embedded sandbox, warn_report_url says where they go)."""
    settings = app[SETTINGS]
    check = None
    if settings.public_base_url is not None and not settings.uses_sandbox:
        check = asyncio.get_running_loop().create_task(
            _say_where_reports_lead(settings.report_url, api_reached_through(settings)),
            name="report-url-check",
        )
    yield
    if check is not None:
        check.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await check


async def _livekit(app: web.Application) -> AsyncIterator[None]:
    """The client session, the sandbox (when there is no LIVEKIT_URL), LiveKitAPI, the service."""
    settings = app[SETTINGS]
    session = create_session()
    sandbox: Sandbox | None = None
    try:
        if settings.livekit_url is None:
            sandbox = await _start_sandbox(settings)
            app[SANDBOX] = sandbox
            url = sandbox.url
        else:
            url = settings.livekit_url
        app[LIVEKIT_URL] = url
        lkapi = create_client(settings, url, session)
        sender = app.get(WEBHOOKS)
        app[CALLS] = CallService(
            settings,
            app[CONFIG],
            app[STORE],
            lkapi,
            app[METRICS],
            app[EVENTS],
            wake_deliveries=None if sender is None else sender.wake,
        )
        check = None
        if sandbox is None:
            check = asyncio.get_running_loop().create_task(_say_if_livekit_answers(lkapi, url))
        yield
        if check is not None:
            check.cancel()
        await app[CALLS].settle_at_stop()  # before the sandbox's calls end with it
        await app[CALLS].aclose()
        await lkapi.aclose()
        await app[CONFIG].flush_async()  # the finished calls' records held back
        app[CONFIG].say_failures_held_back()
    finally:
        if sandbox is not None:
            await sandbox.stop()
        await session.close()


async def _campaigns(app: web.Application) -> AsyncIterator[None]:
    """The campaign scheduler (on every server; each campaign is driven by one at a time)."""
    settings = app[SETTINGS]
    clock = app[CAMPAIGN_CLOCK]
    scheduler = CampaignScheduler(
        app[STORE],
        app[CALLS],
        app[EVENTS],
        RequestRules.of(settings),
        enforce_calling_hours=settings.campaign_enforce_calling_hours,
        lease_s=settings.claim_lease_s,
        clock=clock,
    )
    app[CAMPAIGNS] = CampaignService(settings, app[STORE], app[EVENTS], scheduler, clock)
    if settings.campaign_pause_after_trunk_faults > 0:
        pause = pause_on_trunk_faults(app[CAMPAIGNS], settings.campaign_pause_after_trunk_faults)
        app[EVENTS].subscribe("campaign trunk faults", pause)
    if settings.campaign_pause_after_agent_faults > 0:
        pause = pause_on_agent_faults(app[CAMPAIGNS], settings.campaign_pause_after_agent_faults)
        app[EVENTS].subscribe("campaign agent faults", pause)
    await _follow_default_webhook_url(app[STORE], settings.calls_webhook_url)
    scheduler.start()
    yield
    await scheduler.stop()


async def _follow_default_webhook_url(store: CallStore, url: str | None) -> None:
    """Campaigns without a webhook_url of their own send their events where CALLS_WEBHOOK_URL
    says now, as their calls do (it is read at start-up: a restart is when it changes). A
    server with webhooks off leaves them as they are: on a shared database, the servers that
    send webhooks may well be others (a worker started without the secret silenced them)."""
    if url is None:
        return
    try:
        moved = await store.follow_default_webhook_url(url)
    except DatabaseError as exc:  # each campaign's next event goes where it went before
        logger.warning("could not point campaigns' events at CALLS_WEBHOOK_URL: %s", exc)
        return
    if moved:
        logger.info(
            "%d campaign(s) send their events to CALLS_WEBHOOK_URL as it is now, as their calls do",
            moved,
        )


async def _reaper(app: web.Application) -> AsyncIterator[None]:
    # A first pass before serving: after a crash, config.json is pruned and the events the
    # last run left undispatched are taken over before anything new happens.
    await app[CALLS].reap_logged(starting=True)
    # The take-over of a dead server's events too, on a timer of its own (every subscriber
    # has subscribed by now; stopped first, as the reaper is).
    app[EVENTS].take_over_every(app[SETTINGS].reaper_interval_s)
    task = asyncio.create_task(kept_running("reaper", app[CALLS].run_reaper), name="call-reaper")
    yield
    await app[EVENTS].stop_taking_over()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_database_waits(app: web.Application) -> AsyncIterator[None]:
    """First of the stop's steps: from here on they wait on the database STOP_DATABASE_WAIT_S
    in all (CallStore.stop_by), not each its own 10 s or more."""
    yield
    if not app[STORE_GIVEN]:  # a store given is its owner's to close, and may serve on
        app[STORE].stop_by(asyncio.get_running_loop().time() + STOP_DATABASE_WAIT_S)


def fold_accept_failures() -> AcceptFailures:
    """asyncio's "socket.accept() out of system resource" once a minute per listening socket
    (AcceptFailures), once per process: its filter."""
    asyncio_logger = logging.getLogger("asyncio")
    folded = next((f for f in asyncio_logger.filters if isinstance(f, AcceptFailures)), None)
    if folded is None:
        folded = AcceptFailures()
        asyncio_logger.addFilter(folded)
    return folded


async def _accept_failures_said(_app: web.Application) -> AsyncIterator[None]:
    """How many failed accepts were held back, once their minute is over and at the stop."""
    folded = fold_accept_failures()

    async def say() -> None:
        while True:
            await asyncio.sleep(REFUSALS_LOOKED_AT_S)
            folded.say_held_back()

    task = asyncio.create_task(say(), name="accept-failures-said")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    folded.say_held_back(all_kinds=True)


def create_app(
    settings: Settings,
    *,
    config: ConfigStore | None = None,
    store: CallStore | None = None,
    campaign_clock: Callable[[], float] = time.time,
) -> web.Application:
    """The application: routes, middlewares, and its long-lived resources in cleanup_ctx.

    `config` (the config.json store) and `store` (the call store) default to the ones the
    settings describe; a given `store` is left open when the app stops (its owner closes it).
    `campaign_clock` is the campaign scheduler's idea of now (tests move it through the day).
    """
    from handlers.webhooks import MAX_WEBHOOK_BYTES

    app = web.Application(
        middlewares=[
            tracked_in_flight,  # outermost: a stop breaks off what still runs past its wait
            count_requests,  # around the send: an answer it aborted is counted so
            answers_sent_in_time,
            unread_bodies_close,
            errors_as_json,
        ],
        client_max_size=MAX_WEBHOOK_BYTES,
    )
    access_log.install(drop_sandbox=settings.uses_sandbox, secrets=settings.secret_texts())
    app[SETTINGS] = settings
    app[PARSER_ERRORS_AS_JSON] = True
    answer_parser_errors_as_json()
    refuse_cut_compressed_bodies()
    fold_accept_failures()
    app[CONFIG] = config or ConfigStore(
        settings.config_path, record_ttl_s=settings.config_record_ttl_s
    )
    app[METRICS] = Metrics()
    app[BODY_READS] = BodyReads()
    app[REPORTS_REFUSED] = ReportsRefused()
    app[IN_FLIGHT] = InFlight()
    app[STORE_GIVEN] = store is not None
    if store is not None:
        app[STORE] = store
    app[CAMPAIGN_CLOCK] = campaign_clock
    app.on_response_prepare.append(protective_headers)
    app.cleanup_ctx.append(_phone_metadata)
    # config.json first: a CONFIG_PATH that cannot be written left a new, empty calls.db
    app.cleanup_ctx.extend([_config_writable, _storage, _events, _livekit, _campaigns, _reaper])
    app.cleanup_ctx.extend([refusals_said, _accept_failures_said, _report_url_checked])
    app.cleanup_ctx.append(_stop_database_waits)  # the last set up: the first to clean up
    health.setup(app)
    calls.setup(app)
    webhooks.setup(app)
    reports.setup(app)
    deliveries.setup(app)
    campaigns.setup(app)
    dnc.setup(app)
    openapi.setup(app)  # last: it documents the routes the others declared
    return app


def check_bind(settings: Settings) -> None:
    """Without CALLS_API_TOKEN the API is open, so it may only listen on loopback."""
    if settings.calls_api_token:
        return
    if not settings.is_loopback:
        raise SettingsError(
            f"CALLS_API_TOKEN must be set to listen on HOST={settings.host} "
            "(without a token the server binds loopback only)"
        )
    logger.warning(
        "CALLS_API_TOKEN is not set: the API is open to every program on this machine"
        " (requests from web pages are refused)"
    )


def warn_ipv6_only(settings: Settings) -> None:
    """HOST=:: listens on IPv6 alone (`ipv6_only_warning`)."""
    if (warning := ipv6_only_warning("HOST", settings.host)) is not None:
        logger.warning("%s", warning)


def warn_token_settings(settings: Settings) -> None:
    for warning in settings.token_warnings():
        logger.warning("%s", warning)


def warn_livekit_settings(settings: Settings) -> None:
    for warning in settings.livekit_warnings():
        logger.warning("%s", warning)
    if settings.short_secret_warning() is not None:
        # Said above, once and as a log line. PyJWT would say it again at the first token
        # signed and the first verified, as raw stderr lines with a source line between, in
        # the middle of the log (`livekit-server --dev`'s secret, `secret`, is 6 characters).
        warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)


def log_where(settings: Settings, dotenv: str = ".env") -> None:
    """Which .env, database and config.json this server uses, as absolute paths: a server
    started from another directory finds no .env and makes a new calls.db there, and the
    line a fresh database writes ("schema version 11 (was 0)") does not say why."""
    found = os.path.realpath(dotenv) if Path(dotenv).is_file() else f"none in {Path.cwd()}"
    database = (
        "PostgreSQL (DATABASE_URL)"
        if settings.database_url is not None
        else os.path.abspath(settings.calls_db_path)
    )
    # abspath, not resolve(): a link loop there is start-up's to say, not a traceback here
    logger.info(
        "settings: .env %s; calls database %s; config %s",
        found,
        database,
        os.path.abspath(settings.config_path),
    )


def warn_disabled_safeguards(settings: Settings) -> None:
    """Safeguards meant off for local testing only, on a server that rings real phones."""
    if settings.uses_sandbox:
        return
    if settings.calls_webhook_allow_private:
        logger.warning(
            "CALLS_WEBHOOK_ALLOW_PRIVATE is on with a real LiveKit: webhooks may go to private"
            " and loopback addresses and over plain http (meant for local testing)"
        )
    if not settings.campaign_enforce_calling_hours:
        logger.warning(
            "CAMPAIGN_ENFORCE_CALLING_HOURS is off with a real LiveKit: campaigns may ring"
            " people outside 08:00-21:00 their time"
        )
    livekit = URL(settings.livekit_url or "")
    if livekit.scheme in ("ws", "http") and not is_loopback_host((livekit.host or "").rstrip(".")):
        logger.warning(
            "LIVEKIT_URL is %s:// to %s: every call's number, instructions and signed request"
            " go unencrypted (use wss:// or https://)",
            livekit.scheme,
            livekit.host,
        )


def warn_short_record_ttl(settings: Settings) -> None:
    """CONFIG_RECORD_TTL_S below the longest a call may last prunes the records of live calls
    (their agents then use the dispatch's snapshot): legal, but rarely meant."""
    longest = max(RINGING_TIMEOUT_RANGE[1], settings.call_ringing_timeout_s) + max(
        MAX_DURATION_RANGE[1], settings.call_max_duration_s
    )
    if settings.config_record_ttl_s < longest:
        logger.warning(
            "CONFIG_RECORD_TTL_S is %g s, less than a call may last (%d s of ringing and"
            " talking at most): records of calls still live will be pruned",
            settings.config_record_ttl_s,
            longest,
        )


def warn_zero_retention(settings: Settings) -> None:
    """CALL_DATA_RETENTION_DAYS=0, as "0: off, keep them" is often written: every call's
    transcript, summary and extracted fields were erased at the reaper's next pass after it
    ended, unsaid, before anyone had read them (its value is a number of days, 0 is none)."""
    if settings.call_data_retention_days == 0:
        logger.warning(
            "CALL_DATA_RETENTION_DAYS is 0: every call's transcript, summary and extracted"
            " fields are erased within REAPER_INTERVAL_S (%g s) of its end; 0 is not 'keep"
            " them': give the number of days to keep them",
            settings.reaper_interval_s,
        )


def warn_unused_first_retry_step(settings: Settings) -> None:
    """CALLS_WEBHOOK_RETRY_SCHEDULE's first value is the first attempt's, which is always at
    once: `5,30,120`, written as the retries' delays, silently made the 5 s retry none."""
    schedule = settings.calls_webhook_retry_schedule
    if schedule[0] != 0:
        retries = ", ".join(f"{step:g}" for step in schedule[1:]) or "none"
        logger.warning(
            "CALLS_WEBHOOK_RETRY_SCHEDULE starts with %g, not 0: its first value is the first"
            " attempt's, always at once, so %g is not used (retries after: %s s); start it"
            " with 0",
            schedule[0],
            schedule[0],
            retries,
        )


def warn_open_files(settings: Settings) -> None:
    """config.json and calls.db (with its -wal and -shm) that every user of the machine may
    read: made 0600 since 15665cb, but files an older release made 0644 (umask 022) keep
    their mode (probe AV), and so do files an operator opened up. Group access is left alone
    (`chmod 640` for an agent of another user)."""
    config = settings.config_path
    # What each holds: config.json (and its set-aside copies) no numbers nor transcripts.
    holds = "names, instructions and extra parameters"
    paths = [(config, holds)]
    with contextlib.suppress(OSError):  # copies an older release (or a 0644 file) left open
        paths += [(p, holds) for p in sorted(config.parent.glob(f"{config.name}.corrupt-*"))]
    if settings.database_url is None and _may_be_the_database(settings.calls_db_path):
        db = settings.calls_db_path
        holds = "names, numbers, instructions and transcripts"
        paths += [(db.with_name(db.name + end), holds) for end in ("", "-wal", "-shm")]
    for path, held in paths:
        try:
            st_mode = os.stat(path).st_mode
        except OSError:  # not there yet (made 0600), or its start-up check says why
            continue
        mode = stat.S_IMODE(st_mode)
        # A directory or a device (CONFIG_PATH=/dev/null, CALLS_DB_PATH=/tmp) is no file of
        # ours, and its start-up check refuses it: "chmod o-rwx /dev/null" was the advice.
        if mode & 0o006 and stat.S_ISREG(st_mode) and others_may_reach(path):
            logger.warning(
                "%s (mode %04o) may be read by every user of this machine; it holds %s:"
                " chmod o-rwx it",
                path,
                mode,
                held,
            )


def _may_be_the_database(path: Path) -> bool:
    """Whether the file at `path` is an SQLite database, or empty (SQLite makes one of it), or
    cannot be told (none yet, unreadable, no regular file: its start-up check says why). A
    file that is none (CALLS_DB_PATH=notes.txt, /etc/hosts) is refused by that check as no
    database, but was first said to hold "names, numbers, instructions and transcripts:
    chmod o-rwx it", sending the operator to close up a file that holds none of them."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return True
        with open(path, "rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except OSError:
        return True
    return head == b"" or head == SQLITE_HEADER


def warn_open_directories(settings: Settings) -> None:
    """config.json's and calls.db's directory that every user of the machine may write (a
    0777 one an older release made under umask 000, CONFIG_PATH in /tmp): any user may put a
    file of their own there under the name, and this server then writes callers' data into it,
    keeping its owner and mode (a file that exists keeps them), said by no line. With the
    sticky bit (/tmp) only a missing name can be taken, or one another user holds already:
    run as root, the server wrote every call into `nobody`'s 0600 config.json in /tmp."""
    files = [(settings.config_path, "names, instructions and extra parameters")]
    if settings.database_url is None:
        files.append((settings.calls_db_path, "names, numbers, instructions and transcripts"))
    for path, held in files:
        try:
            target = path.resolve()
            directory = os.stat(target.parent)
        except (OSError, RuntimeError):  # not there yet (made 0755), or its own check says why
            continue
        if not directory.st_mode & stat.S_IWOTH or not others_may_reach(target.parent):
            continue
        try:
            owner: int | None = os.stat(target).st_uid
        except OSError:
            owner = None
        if directory.st_mode & stat.S_ISVTX and owner == os.geteuid():
            continue  # sticky: nobody else may replace this process's own file
        taken = "" if owner in (None, os.geteuid()) else f" (it is uid {owner}'s now)"
        logger.warning(
            "%s (mode %04o) may be written by every user of this machine: any of them may put"
            " a file of their own there as %s%s, which this server then writes %s into,"
            " keeping its owner and mode; chmod o-w it, or move %s to a directory of the"
            " service's own",
            target.parent,
            stat.S_IMODE(directory.st_mode),
            target.name,
            taken,
            held,
            target.name,
        )


CHECKOUT = Path(__file__).resolve().parent


def warn_checkout_unread(settings: Settings, checkout: Path = CHECKOUT) -> None:
    """Started from another working directory than its checkout, the server finds `.env`,
    calls.db and config.json from there, not the checkout's (see checkout_unread_warning):
    its `.env`'s LIVEKIT_URL lost, it started on the embedded sandbox (no phone called) with
    a new, empty calls.db (no do-not-call list), said by an INFO line of paths only."""
    files = [settings.config_path]
    if settings.database_url is None:
        files.insert(0, settings.calls_db_path)
    if (warning := checkout_unread_warning(checkout, files, "server")) is not None:
        logger.warning("%s", warning)


def warn_sqlite_left_behind(settings: Settings) -> None:
    """DATABASE_URL set (a move to PostgreSQL, "Running more than one server") with the SQLite
    calls.db still there: the server started on an empty database without a word, and the
    numbers on calls.db's do-not-call list were called again."""
    if settings.database_url is None:
        return
    from common.storage.sqlite import rows_held  # the SQLite backend, only when it is there

    held = rows_held(settings.calls_db_path)
    if held is None or held == (0, 0):
        return
    calls, listed = held
    logger.warning(
        "DATABASE_URL is set, so the SQLite calls database %s (CALLS_DB_PATH) is not read:"
        " its %d call(s) and %d do-not-call number(s) are not in PostgreSQL, and nothing moves"
        " them; put its numbers on PostgreSQL's list (POST /dnc) before calling, or move %s"
        " aside once you have",
        settings.calls_db_path,
        calls,
        listed,
        settings.calls_db_path.name,
    )


def warn_report_url(settings: Settings) -> None:
    """With a real LiveKit the agents usually run elsewhere: say where their reports go."""
    if settings.uses_sandbox and settings.public_base_url is not None:
        logger.warning(
            "PUBLIC_BASE_URL is set but LIVEKIT_URL is not: the embedded sandbox's agent posts"
            " its reports to %s; if that address does not reach this server from here, calls"
            " get no results",
            settings.report_url,
        )
    if settings.livekit_url is not None and settings.public_base_url is None:
        logger.warning(
            "PUBLIC_BASE_URL is not set: agents will send their reports to %s, which only an "
            "agent on this machine can reach; set PUBLIC_BASE_URL to this server's (or the load "
            "balancer's) address as the agents see it",
            settings.report_url,
        )
    # As LIVEKIT_URL's ws:// is said (warn_disabled_safeguards): the reports carry more than
    # the dial, each call's transcript, summary and extracted fields, with the token signing
    # them. A real LiveKit's agents post from other hosts; the sandbox's, from this process.
    public = URL(settings.public_base_url or "")
    if (
        settings.livekit_url is not None
        and public.scheme == "http"
        and not is_loopback_host((public.host or "").rstrip("."))
    ):
        logger.warning(
            "PUBLIC_BASE_URL is http:// to %s: every agent report (each call's transcript,"
            " summary and extracted fields) and the token signing it go unencrypted (use"
            " https://, a TLS proxy in front of this server)",
            public.host,
        )


async def webhook_host_refusal(
    url: str, resolver: AbstractResolver, timeout: float = WEBHOOK_DNS_TIMEOUT_S
) -> str | None:
    """Why CALLS_WEBHOOK_URL's host may not be sent to, by what it resolves to now (None if
    it may, or if it cannot be resolved now: DNS may not be up yet at boot, and each
    connection checks again; said as a warning)."""
    try:
        await resolve_webhook_host(url, allow_private=False, resolver=resolver, timeout=timeout)
    except AddressRefused as exc:  # the operator's own setting: which address, too
        return f"{exc} ({exc.address})"
    except UnsafeWebhookUrl as exc:  # before OSError: a refused address is both
        return str(exc)
    except (TimeoutError, OSError) as exc:
        logger.warning(
            "CALLS_WEBHOOK_URL's host %s cannot be resolved now (%s); its deliveries wait and"
            " are retried",
            URL(url).host,
            str(exc) or f"no answer within {timeout:g} s",
        )
    return None


def check_webhook_host(settings: Settings) -> None:
    """CALLS_WEBHOOK_URL naming a host that resolves to a private address stops start-up, as
    a call's webhook_url does with 422: the server started, and every event was refused at
    connect time and retried for a day."""
    if settings.calls_webhook_url is None or settings.calls_webhook_allow_private:
        return
    refusal = asyncio.run(webhook_host_refusal(settings.calls_webhook_url, PooledResolver()))
    if refusal is not None:
        raise SettingsError(
            f"CALLS_WEBHOOK_URL: {refusal} (customer webhooks go to public addresses only;"
            " CALLS_WEBHOOK_ALLOW_PRIVATE=1 lifts that for local testing)"
        )


# Addresses a host name may give that this machine cannot bind (IPv6 turned off, ::1 not
# assigned in a container): skipped, as asyncio skips them, while another one binds.
UNBINDABLE_ERRNOS = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL})
LISTEN_BACKLOG = 128  # aiohttp's own


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """HOST:PORT bound and listening before the app starts, as aiohttp would bind them
    (every address the host names, SO_REUSEADDR, IPv6 sockets IPv6 only). Start-up runs the
    reaper's first pass, which settles this server's calls a previous run left in its
    embedded sandbox: a second process given a HOST:PORT already served must fail before
    that, or it would settle the running server's live calls and then exit. (Listening, not
    only bound: with SO_REUSEADDR, which a restart needs, two sockets bound but not yet
    listening do not conflict. A connection made during start-up waits in the backlog.)"""
    found = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    skipped: OSError | None = None
    try:
        for family, kind, proto, _name, address in dict.fromkeys(found):
            try:
                sockets.append(_listening(family, kind, proto, address))
            except OSError as exc:
                if exc.errno not in UNBINDABLE_ERRNOS:
                    raise
                skipped = exc
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise skipped or OSError(errno.EADDRNOTAVAIL, "no address to listen on")
    return sockets


def _listening(family: int, kind: int, proto: int, address: Any) -> socket.socket:
    """One socket bound to `address` and listening, or closed and the error raised."""
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


OPEN_FILES_CEILING = 1 << 20  # when the hard limit is "unlimited"


def raise_open_files_limit() -> None:
    """Every connection (clients, LiveKit, agents, webhook receivers) holds a descriptor, and
    the usual soft limit of 1024 runs out long before the hard one: a few hundred live calls
    with their clients, or a thousand idle connections, and every accept and config write
    fails. Raised to the hard limit at start, as Go's runtime does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning(
                "open files limit stays %d (could not raise it to %d: %s)", soft, target, exc
            )
            return
        logger.info("open files limit raised from %d to %d", soft, target)


# The young generation's collection threshold (Python's default: 700), and the older two's.
GC_THRESHOLDS = (7000, 10, 10)


def collect_garbage_less_often() -> None:
    """Python's default collects its youngest generation every 700 net new objects: every
    millisecond or so here, where a request in flight holds a few hundred (its coroutines,
    headers, record, report), so most of them live through two or three collections, are
    moved to the older generations and traversed again there. At 50 clients that was 1.0
    ms of CPU per call (8% of the server's), 0.2 ms at 7,000, where a request's objects are
    mostly gone before the next collection: a young collection runs a thirtieth as often,
    and the longest one seen under load was 19 ms against 64 (`python -m bench.gc_cost`).
    At one client there is little to collect either way."""
    gc.set_threshold(*GC_THRESHOLDS)


def begin_stop(app: web.Application, signum: signal.Signals) -> None:
    """The first stop signal's work: said, uploads answered, and the requests still running
    once their time is up broken off; then aiohttp's stop (GracefulExit)."""
    logger.info(
        "stopping (%s%s): no new connections; requests in flight get up to %d s",
        signum.name,
        ": settings are not reloaded, start it again to apply them"
        if signum == signal.SIGHUP
        else "",
        SHUTDOWN_TIMEOUT_S,
    )
    app[BODY_READS].stop()  # a request still uploading is answered 503, not left hanging
    # aiohttp waits SHUTDOWN_TIMEOUT_S, then fails only body reads and waits as long again
    app[IN_FLIGHT].stop(SHUTDOWN_TIMEOUT_S)
    raise web.GracefulExit()


async def _stop_signals(app: web.Application) -> None:
    """Takes SIGTERM/SIGINT (and SIGHUP) over from aiohttp (whose handler is in place by now):
    the first begins the stop, as aiohttp's does; another one while it runs is said to be
    under way and changes nothing. aiohttp's raised its exit again, however soon it came
    (back to back, or in the stop itself), which broke off the requests in flight with a page
    of tracebacks."""
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal(signum: signal.Signals) -> None:
        nonlocal stopping
        if stopping:
            logger.warning(
                "already stopping (requests in flight get up to %d s); SIGKILL stops at once",
                SHUTDOWN_TIMEOUT_S,
            )
            return
        stopping = True
        begin_stop(app, signum)

    # SIGHUP too (a closed terminal, a reload asked of a server that has none): it killed the
    # server outright, calls in flight and all. Unless it came ignored (`nohup`): then a
    # closed terminal must go on not stopping the server.
    signals = [signal.SIGINT, signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signals.append(signal.SIGHUP)
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)


def main() -> None:
    warned = False  # .env's mistakes: said once, first when start-up stops
    try:
        settings = load_settings()
        settings.require_livekit()
        settings.require_webhook_secret()
        settings.require_token_pair()
        configure_logging(settings)
        check_bind(settings)
        warn_ipv6_only(settings)
        warn_token_settings(settings)
        check_webhook_host(settings)
        warn_report_url(settings)
        warn_open_files(settings)
        warn_open_directories(settings)
        warn_livekit_settings(settings)
        warn_short_record_ttl(settings)
        warn_zero_retention(settings)
        warn_unused_first_retry_step(settings)
        warn_disabled_safeguards(settings)
        for warning in dotenv_warnings():
            logger.warning("%s", warning)
        warned = True
        raise_open_files_limit()
    except SettingsError as exc:
        # A misspelt name, a `${`, a setting given twice: what explains the error (a setting
        # read as unset, a value taken as written), said before it, as the agent does.
        if not warned:
            for warning in dotenv_warnings():
                print(f"warning: {warning}", file=sys.stderr)
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log_where(settings)
    warn_checkout_unread(settings)
    warn_sqlite_left_behind(settings)
    logger.info(
        "starting on http://%s:%d (webhooks at %s)",
        f"[{settings.host}]" if ":" in settings.host else settings.host,  # IPv6: a URL's form
        settings.port,
        settings.webhook_path,
    )
    try:
        sockets = listening_sockets(settings.host, settings.port)
    except OSError as exc:  # in use, not this machine's, a privileged port, no such host
        # Taken: most often by another checkout's server (README's first case), beside which
        # this one runs as README says; the message named no way to. The port named is the
        # next one: a fixed 8001 named the very port taken to a server started on it.
        beside = (
            f": from another checkout, {_port_beside(settings)} make run runs beside it"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        logger.critical(
            "cannot listen on %s:%d: %s (set HOST/PORT%s)",
            settings.host,
            settings.port,
            exc.strerror or exc,
            beside,
        )
        raise SystemExit(2) from None
    try:
        check_sandbox_port(settings)
    except StartupError as exc:
        for sock in sockets:
            sock.close()
        logger.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    app = create_app(settings)
    app.on_startup.append(_stop_signals)
    collect_garbage_less_often()
    try:
        web.run_app(
            app,
            sock=sockets,
            print=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
            # A load balancer that keeps its idle connections to us longer than we do sends
            # a request on one just as we close it, and answers its client 502 (GCP's keeps
            # them 600 s, aiohttp's default is 75 s): HTTP_KEEPALIVE_S outlasts it.
            keepalive_timeout=settings.http_keepalive_s,
            access_log_class=access_log.CallsAccessLogger,
        )
    except StartupError as exc:
        logger.critical("cannot start: %s", exc)  # shown even at LOG_LEVEL=CRITICAL
        raise SystemExit(2) from None
    except OSError as exc:  # the port is bound above: not its errors here
        logger.critical("cannot start: %s", exc)
        raise SystemExit(2) from None
    logger.info("stopped")
    OwnThreads.close_all()  # their idle threads end; one held in its work is reported below
    _leave_stuck_threads()


def _leave_stuck_threads(wait_s: float = STUCK_THREAD_WAIT_S) -> None:
    """Exit now if a thread the interpreter would join at exit still runs after `wait_s`:
    a file operation that never returns (a write of config.json on a stalled disk) holds an
    executor thread, and the server said "stopped" and then ran on for good (only SIGKILL
    ended it). Its write is abandoned (the stop's log said which); the logs are flushed."""
    deadline = time.monotonic() + wait_s
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    joined = [t for t in others if not t.daemon]
    for thread in joined:  # idle executor threads end at once: the loop's close told them
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in joined if t.is_alive()]
    if stuck:
        # A webhook host lookup is the customer's name server not answering, not this disk:
        # reported as a file operation, a stop in the middle of one sent the operator to look
        # at a disk that was fine.
        lookups = NameLookups.thread_prefixes()
        held = [name for name in stuck if not name.startswith(lookups)]
        if held:
            logger.error(
                "exiting without %d thread(s) still held in a file operation (a stalled disk?): %s",
                len(held),
                ", ".join(held),
            )
        if len(held) < len(stuck):
            names = NameLookups.names_held()
            logger.warning(
                "exiting without %d webhook host lookup(s) still waiting for a name server"
                " that does not answer (%s)",
                len(stuck) - len(held),
                ", ".join(names[:3]) + (", ..." if len(names) > 3 else ""),
            )
        logging.shutdown()
        os._exit(0)


USAGE = """\
usage: python server.py    (no arguments: `make run` runs it)
Its settings come from the environment and the working directory's .env (see .env.example
and README.md, Configuration), e.g.: PORT=8001 SANDBOX_PORT=0 python server.py"""


def refuse_arguments(args: list[str]) -> None:
    """`python server.py --port 8001` started on PORT (8000), the option unread, and
    `--help` started a server. Settings are the environment's and .env's alone: `-h`/`--help`
    prints how to give them, anything else stops with one line naming the options given
    (their names only: a value may be a secret)."""
    if not args:
        return
    if args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0)
    names = [arg.split("=", 1)[0] for arg in args if arg.startswith("-")]
    given = f" (got {', '.join(names)})" if names else ""
    print(
        f"server.py takes no arguments{given}: settings come from the environment or .env,"
        " e.g. PORT=8001 python server.py (see .env.example; python server.py --help)",
        file=sys.stderr,
    )
    raise SystemExit(2)


if __name__ == "__main__":
    refuse_arguments(sys.argv[1:])
    main()
