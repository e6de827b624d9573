"""Typed application keys and the small helpers every handler shares."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from common.call_flow import CallService
from common.calls_db import CallsDB
from common.metrics import Metrics
from common.ratelimit import RateLimiter
from common.settings import Settings
from common.update_config import ConfigStore

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", ConfigStore)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", RateLimiter)
DB = web.AppKey("db", CallsDB)
CALLS = web.AppKey("calls", CallService)
LIVEKIT_URL = web.AppKey("livekit_url", str)


def json_error(
    status: int,
    error: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The one error shape: {"status": "error", "error": ..., "details": [...]}."""
    return web.json_response(
        {"status": "error", "error": error, "details": details or []},
        status=status,
        headers=headers,
    )


class BodyTooLarge(Exception):
    pass


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing (before reading it all) anything over `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
