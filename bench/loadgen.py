"""The load generator: its own process, an aiohttp client, bounded in count and in time.

Reads a JSON spec on stdin, prints a JSON result on stdout:

    {"url": "http://127.0.0.1:PORT/path", "method": "POST", "concurrency": 10, "count": 500,
     "max_s": 30, "body": "...", "headers": {...},
     "webhooks": {"call_ids": [...], "api_key": "...", "api_secret": "...", "id_prefix": "..."}}

`concurrency` clients each send one request at a time over keep-alive connections until
`count` requests were sent or `max_s` seconds passed. With `webhooks`, every request is a
distinct LiveKit webhook event about one of `call_ids`, with a unique event id, signed the way
LiveKit signs them; all of them are built and signed before the clock starts.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import sys
import time
from typing import Any

import aiohttp
from google.protobuf.json_format import MessageToDict
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo, Room, TrackInfo, TrackType
from livekit.protocol.webhook import WebhookEvent

REQUEST_TIMEOUT_S = 30.0
LIVEKIT_TTL = datetime.timedelta(minutes=5)
MAX_ERROR_SAMPLES = 5

Request = tuple[bytes, dict[str, str]]


def webhook_event(call_id: str, event_id: str, n: int, created_ms: int) -> WebhookEvent:
    """What LiveKit posts while a SIP call is up: the callee's participant or its track."""
    room = Room(
        sid=f"RM_{call_id[-12:]}",
        name=call_id,
        empty_timeout=300,
        departure_timeout=20,
        creation_time=created_ms // 1000,
        creation_time_ms=created_ms,
        num_participants=1,
    )
    identity = f"sip-{call_id}"
    event = WebhookEvent(id=event_id, room=room, created_at=int(time.time()))
    if n % 2 == 0:
        event.event = "participant_joined"
        event.participant.CopyFrom(
            ParticipantInfo(
                sid=f"PA_{call_id[-12:]}",
                identity=identity,
                name="Callee",
                state=ParticipantInfo.ACTIVE,
                kind=ParticipantInfo.SIP,
                joined_at=created_ms // 1000,
                joined_at_ms=created_ms,
                attributes={
                    "sip.callStatus": "active",
                    "sip.phoneNumber": "+14155550480",
                    "sip.callID": f"SCL_{call_id[-12:]}",
                    "sip.trunkID": "ST_sandbox",
                },
            )
        )
    else:
        event.event = "track_published"
        event.participant.CopyFrom(ParticipantInfo(sid=f"PA_{call_id[-12:]}", identity=identity))
        event.track.CopyFrom(
            TrackInfo(sid=f"TR_{n}", type=TrackType.AUDIO, name=identity, mime_type="audio/opus")
        )
    return event


def signed_webhooks(spec: dict[str, Any], count: int) -> list[Request]:
    call_ids: list[str] = spec["call_ids"]
    key, secret, prefix = spec["api_key"], spec["api_secret"], spec["id_prefix"]
    created_ms = int(time.time() * 1000) - 5000
    requests: list[Request] = []
    for n in range(count):
        event = webhook_event(call_ids[n % len(call_ids)], f"EV_{prefix}{n:07d}", n, created_ms)
        body = json.dumps(MessageToDict(event), separators=(",", ":")).encode()
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        # for 5 minutes, as LiveKit signs: the server refuses an exp hours ahead (the SDK's 6 h)
        token = AccessToken(key, secret).with_ttl(LIVEKIT_TTL).with_sha256(digest).to_jwt()
        headers = {"Authorization": token, "Content-Type": "application/webhook+json"}
        requests.append((body, headers))
    return requests


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    url: str = spec["url"]
    method: str = spec.get("method", "POST")
    concurrency = int(spec["concurrency"])
    count = int(spec["count"])
    max_s = float(spec["max_s"])
    if spec.get("webhooks"):
        requests = signed_webhooks(spec["webhooks"], count)
    else:
        body = str(spec.get("body") or "").encode()
        requests = [(body, dict(spec.get("headers") or {}))]

    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t_start = time.time()
        started = time.perf_counter()
        deadline = started + max_s

        async def client() -> None:
            nonlocal issued
            while issued < count and time.perf_counter() < deadline:
                body, headers = requests[issued % len(requests)]
                issued += 1
                sent = time.perf_counter()
                try:
                    async with session.request(method, url, data=body, headers=headers) as resp:
                        answer = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                if status != 200:
                    errors.append(f"HTTP {status}: {answer[:200]!r}")
                    continue
                latencies.append((time.perf_counter() - sent) * 1000.0)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        t_end = time.time()
    return {
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:MAX_ERROR_SAMPLES],
        "latencies_ms": latencies,
        "t_start": t_start,
        "t_end": t_end,
        "elapsed_s": elapsed,
    }


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()
