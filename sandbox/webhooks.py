"""Signed webhook delivery, as livekit/protocol's ``webhook.URLNotifier`` does it.

- Body: the ``WebhookEvent`` protobuf as protojson with default options, i.e. lowerCamelCase
  field names, enums by name, 64-bit integers as strings, unpopulated fields left out.
- ``Content-Type: application/webhook+json``.
- ``Authorization: <JWT>`` (no ``Bearer``): an access token signed with the API secret, ``iss`` =
  API key, valid 5 minutes, whose ``sha256`` claim is the base64 SHA-256 of the exact body bytes.
- Retried (same body, same event id) on connection errors, 5xx and 429, up to 5 attempts in all,
  with exponential back-off; any other answer ends the delivery.
- One ordered queue per room: the events of a room arrive in the order they happened.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from google.protobuf.json_format import MessageToDict
from livekit.api.access_token import AccessToken
from livekit.protocol.webhook import WebhookEvent

logger = logging.getLogger(__name__)

CONTENT_TYPE: Final = "application/webhook+json"
USER_AGENT: Final = "LiveKit-Sandbox"
TOKEN_TTL: Final = datetime.timedelta(minutes=5)
MAX_ATTEMPTS: Final = 5
BACKOFF_BASE_S: Final = 1.0  # go-retryablehttp's RetryWaitMin, doubled after each failure
BACKOFF_FLOOR_S: Final = 0.01
REQUEST_TIMEOUT_S: Final = 10.0


def encode_event(event: WebhookEvent) -> bytes:
    """The exact body LiveKit posts for ``event``."""
    payload = MessageToDict(event)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_body(body: bytes, api_key: str, api_secret: str) -> str:
    """The ``Authorization`` header value for ``body`` (a bare JWT, as LiveKit sends it)."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    return AccessToken(api_key, api_secret).with_ttl(TOKEN_TTL).with_sha256(digest).to_jwt()


@dataclass
class _RoomQueue:
    events: collections.deque[WebhookEvent] = field(default_factory=collections.deque)
    worker: asyncio.Task[None] | None = None


class WebhookSender:
    """Queues events per room and posts them, in order, with retries."""

    def __init__(
        self,
        *,
        url: str | None,
        api_key: str,
        api_secret: str,
        time_scale: float,
    ) -> None:
        self.url = url  # may be changed at any time; each delivery reads it
        self._api_key = api_key
        self._api_secret = api_secret
        self._time_scale = time_scale
        self._queues: dict[str, _RoomQueue] = {}
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
        """Cancel pending deliveries and close the HTTP session."""
        workers = [q.worker for q in self._queues.values() if q.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pending(self) -> set[asyncio.Task[None]]:
        """Delivery workers still running."""
        return {q.worker for q in self._queues.values() if q.worker and not q.worker.done()}

    def send(self, key: str, event: WebhookEvent) -> None:
        """Queue ``event`` behind the earlier events of the same ``key`` (the room sid)."""
        if self.url is None:
            logger.debug("sandbox: no webhook URL, not posting %s %s", event.event, event.id)
            return
        queue = self._queues.setdefault(key, _RoomQueue())
        queue.events.append(event)
        if queue.worker is None or queue.worker.done():
            queue.worker = asyncio.create_task(self._drain(key, queue), name=f"webhooks-{key}")

    async def _drain(self, key: str, queue: _RoomQueue) -> None:
        while queue.events:
            await self._deliver(queue.events[0])
            queue.events.popleft()
        # Deciding to stop and finishing happen in the same step, so send() sees a done worker.
        if self._queues.get(key) is queue:
            del self._queues[key]

    def _backoff(self, failures: int) -> float:
        return max(BACKOFF_BASE_S * 2.0 ** (failures - 1) * self._time_scale, BACKOFF_FLOOR_S)

    async def _deliver(self, event: WebhookEvent) -> None:
        if self._session is None:
            raise RuntimeError("WebhookSender.start() was not called")
        body = encode_event(event)
        headers = {
            "Authorization": sign_body(body, self._api_key, self._api_secret),
            "Content-Type": CONTENT_TYPE,
            "User-Agent": USER_AGENT,
        }
        for attempt in range(1, MAX_ATTEMPTS + 1):
            url = self.url
            if url is None:
                logger.debug("sandbox: webhook URL unset, dropping %s %s", event.event, event.id)
                return
            try:
                async with self._session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            else:
                if status < 500 and status != 429:
                    if status >= 400:
                        self.refused += 1
                        logger.warning(
                            "sandbox webhook %s %s refused with HTTP %d; not retried",
                            event.event,
                            event.id,
                            status,
                        )
                    else:
                        logger.debug("sandbox webhook %s %s delivered", event.event, event.id)
                    self.delivered += 1
                    return
                problem = f"HTTP {status}"
            if attempt < MAX_ATTEMPTS:
                delay = self._backoff(attempt)
                logger.info(
                    "sandbox webhook %s %s attempt %d failed (%s), retrying in %.2f s",
                    event.event,
                    event.id,
                    attempt,
                    problem,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                logger.warning(
                    "sandbox webhook %s %s dropped after %d attempts (%s)",
                    event.event,
                    event.id,
                    MAX_ATTEMPTS,
                    problem,
                )
        self.dropped += 1
