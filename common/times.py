"""Times as this service shows them: ISO 8601 in UTC with milliseconds and a Z, in the API's
answers, its customer webhooks and its log lines alike."""

from __future__ import annotations

import datetime
from typing import overload


@overload
def iso_time(at: float) -> str: ...
@overload
def iso_time(at: float | None) -> str | None: ...
def iso_time(at: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC string with milliseconds (None stays None)."""
    if at is None:
        return None
    stamp = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
