"""Signed deliveries: LiveKit's webhooks, as livekit/protocol's ``webhook.URLNotifier`` posts
them (the reports our agent would post go through the agent's own sender: sandbox/agent.py).

- Webhook body: the ``WebhookEvent`` protobuf as protojson with default options, i.e.
  lowerCamelCase field names, enums by name, 64-bit integers as strings, unpopulated fields left
  out; ``Content-Type: application/webhook+json``.
- ``Authorization: <JWT>`` (no ``Bearer``): an access token signed with the API secret, ``iss`` =
  API key, valid 5 minutes, whose ``sha256`` claim is the base64 SHA-256 of the exact body bytes
  (a report's token also grants its call's room: common/signing.py).
- Retried (same body) on connection errors, timeouts, 5xx and 429, up to 5 attempts in all,
  with exponential back-off scaled by the time scale (`Retries.livekit`); any other answer
  ends the delivery. A 429 or 503 with a `Retry-After` of seconds waits that long instead, as
  go-retryablehttp's `DefaultBackoff` does (v0.7.8, LiveKit's notifier's HTTP client).
- One ordered queue per key (a room): they arrive in the order they happened.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from google.protobuf.json_format import MessageToDict
from livekit.protocol.webhook import WebhookEvent

from common.signing import sign_body

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/webhook+json"
USER_AGENT: Final = "LiveKit-Sandbox"
MAX_ATTEMPTS: Final = 5  # LiveKit's webhook notifier
BACKOFF_BASE_S: Final = 1.0  # go-retryablehttp's RetryWaitMin, doubled after each failure
BACKOFF_FLOOR_S: Final = 0.01
REQUEST_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True)
class Retries:
    """When a failed post is sent again: after `first_delay_s`, doubling up to `max_delay_s`,
    for `max_attempts` attempts in all, or (None) until `deadline_s` after the first; each
    attempt bounded by `attempt_timeout_s`. Answers retried: 5xx and `statuses`."""

    first_delay_s: float
    max_delay_s: float
    max_attempts: int | None
    deadline_s: float
    attempt_timeout_s: float
    statuses: frozenset[int]
    retry_after_scale: float | None = None
    """A 429's or 503's `Retry-After` (seconds) is the pause, times this; None: ignored."""

    @classmethod
    def livekit(cls, time_scale: float) -> Retries:
        """LiveKit's webhook notifier: 5 attempts, 1 s doubling (on the sandbox's clock)."""
        return cls(
            first_delay_s=BACKOFF_BASE_S * time_scale,
            max_delay_s=math.inf,
            max_attempts=MAX_ATTEMPTS,
            deadline_s=math.inf,
            attempt_timeout_s=REQUEST_TIMEOUT_S,
            statuses=frozenset({429}),
            retry_after_scale=time_scale,
        )

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """The pause after the `failures`-th failed attempt (answered `Retry-After:
        retry_after_s`, if it was)."""
        if retry_after_s is not None and self.retry_after_scale is not None:
            return max(retry_after_s * self.retry_after_scale, BACKOFF_FLOOR_S)
        backoff = self.first_delay_s * 2.0 ** (failures - 1)
        return max(min(backoff, self.max_delay_s), BACKOFF_FLOOR_S)

    def retried(self, status: int) -> bool:
        return status >= 500 or status in self.statuses


def retry_after(resp: aiohttp.ClientResponse) -> float | None:
    """A 429's or 503's `Retry-After` in seconds (go-retryablehttp reads it on those alone);
    None without one, or for one that is no whole number of seconds."""
    value = resp.headers.get("Retry-After", "")
    if resp.status not in (429, 503) or not (value.isascii() and value.isdigit()):
        return None
    return float(value)


def encode_event(event: WebhookEvent) -> bytes:
    """The exact body LiveKit posts for ``event``."""
    payload = MessageToDict(event)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Delivery:
    """One signed POST: where (read at delivery time: None drops it), what, and its label."""

    url: Callable[[], str | None]
    body: bytes
    authorization: str
    content_type: str
    label: str


@dataclass
class _Queue:
    items: collections.deque[Delivery] = field(default_factory=collections.deque)
    worker: asyncio.Task[None] | None = None


class SignedPoster:
    """Queues signed POSTs per key and sends them, in order, with retries."""

    def __init__(self, *, api_key: str, api_secret: str, retries: Retries, what: str) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.retries = retries
        self._what = what
        self._queues: dict[str, _Queue] = {}
        self._session: aiohttp.ClientSession | None = None
        self.delivered = 0
        self.refused = 0
        self.dropped = 0

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            )

    async def close(self) -> None:
        """Cancel pending deliveries and close the HTTP session. Nothing is taken from the
        start: a delivery queued while the workers were being cancelled started a worker of
        its own, which then posted through the closed session ('Session is closed', an
        exception nobody retrieved, in a test's log)."""
        session, self._session = self._session, None
        workers = [q.worker for q in self._queues.values() if q.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queues.clear()
        if session is not None:
            await session.close()

    def pending(self) -> set[asyncio.Task[None]]:
        """Delivery workers still running."""
        return {q.worker for q in self._queues.values() if q.worker and not q.worker.done()}

    def enqueue(self, key: str, delivery: Delivery) -> None:
        """Queue `delivery` behind the earlier ones of the same `key`."""
        if self._session is None:  # stopped (or never started): nobody is listening
            logger.debug("sandbox: not running, not posting %s %s", self._what, delivery.label)
            return
        queue = self._queues.setdefault(key, _Queue())
        queue.items.append(delivery)
        if queue.worker is None or queue.worker.done():
            name = f"{self._what}-{key}"
            queue.worker = asyncio.create_task(self._drain(key, queue), name=name)

    async def _drain(self, key: str, queue: _Queue) -> None:
        while queue.items:
            await self._deliver(queue.items[0])
            queue.items.popleft()
        # Deciding to stop and finishing happen in the same step, so enqueue() sees a done worker.
        if self._queues.get(key) is queue:
            del self._queues[key]

    async def _deliver(self, delivery: Delivery) -> None:
        session = self._session
        if session is None:
            return
        what, label, retries = self._what, delivery.label, self.retries
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + retries.deadline_s
        attempt = 0
        while True:
            attempt += 1
            url = delivery.url()
            if url is None:
                logger.debug("sandbox: no URL for %s %s, dropping it", what, label)
                return
            timeout = max(0.1, min(retries.attempt_timeout_s, deadline - loop.time()))
            failure = await self._attempt(session, url, delivery, timeout)
            if failure is None:
                return
            problem, asked_s = failure
            remaining = deadline - loop.time()
            if attempt == retries.max_attempts or remaining <= 0:
                logger.warning(
                    "sandbox %s %s dropped after %d attempts over %.1f s (last: %s)",
                    what,
                    label,
                    attempt,
                    loop.time() - started,
                    problem,
                )
                self.dropped += 1
                return
            delay = min(retries.delay(attempt, asked_s), remaining)
            # At DEBUG: during an outage every post of every call fails again and again (84
            # lines for 10 calls in 17 s); the server says the outage itself, once a minute.
            logger.debug(
                "sandbox %s %s attempt %d failed (%s), retrying in %.2f s",
                what,
                label,
                attempt,
                problem,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(
        self, session: aiohttp.ClientSession, url: str, delivery: Delivery, timeout: float
    ) -> tuple[str, float | None] | None:
        """One POST: None when it is done with (taken, or refused for good), else what
        failed, worth another attempt, and the `Retry-After` it was answered with."""
        headers = {
            "Authorization": delivery.authorization,
            "Content-Type": delivery.content_type,
            "User-Agent": USER_AGENT,
        }
        try:
            async with session.post(
                url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                await resp.read()
                status = resp.status
                asked_s = retry_after(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__, None
        if self.retries.retried(status):
            return f"HTTP {status}", asked_s
        if status >= 400:
            self.refused += 1
            logger.warning(
                "sandbox %s %s refused with HTTP %d; not retried",
                self._what,
                delivery.label,
                status,
            )
        else:
            logger.debug("sandbox %s %s delivered", self._what, delivery.label)
        self.delivered += 1
        return None


class WebhookSender(SignedPoster):
    """LiveKit's webhooks: one ordered queue per room, to a URL that may change at any time."""

    def __init__(
        self, *, url: str | None, api_key: str, api_secret: str, time_scale: float
    ) -> None:
        super().__init__(
            api_key=api_key,
            api_secret=api_secret,
            retries=Retries.livekit(time_scale),
            what="webhook",
        )
        self.url = url  # may be changed at any time; each delivery reads it

    def send(self, key: str, event: WebhookEvent) -> None:
        """Queue ``event`` behind the earlier events of the same ``key`` (the room sid)."""
        if self.url is None:
            logger.debug("sandbox: no webhook URL, not posting %s %s", event.event, event.id)
            return
        body = encode_event(event)
        self.enqueue(
            key,
            Delivery(
                url=lambda: self.url,
                body=body,
                authorization=sign_body(body, self.api_key, self.api_secret),
                content_type=CONTENT_TYPE,
                label=f"{event.event} {event.id}",
            ),
        )
