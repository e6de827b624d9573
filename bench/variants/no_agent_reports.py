"""Variant (not a fast path: a like-for-like check): the agent is never told where to report.

Since b80321d the server puts `report_url` in the agent's dispatch metadata and the sandbox,
playing our agent, posts its signed reports there (answered, amd, each turn, final: about 7
requests per answered call, real work for the server). 910fe35 has no reports, so comparing
the two compares different traffic. Here `report_url` is always None, so the sandbox posts no
reports and the server gets what 910fe35 gets: the intake request and LiveKit's webhooks.
"""

from __future__ import annotations

from typing import Any

from bench.variants._check import require
from common.livekit import client

require(client, "dispatch_metadata")

_dispatch_metadata = client.dispatch_metadata


def _without_report_url(
    call_id: str,
    phone_number: str,
    record: dict[str, Any],
    ringing_timeout_s: int | None = None,
    report_url: str | None = None,
) -> str:
    return _dispatch_metadata(call_id, phone_number, record, ringing_timeout_s, None)


client.dispatch_metadata = _without_report_url
