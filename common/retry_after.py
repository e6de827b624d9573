"""Reading an HTTP `Retry-After` (RFC 9110 10.2.3): delta-seconds, or an HTTP-date."""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime


def seconds_asked(value: str, now: float) -> float | None:
    """The seconds `value` asks to wait from `now` (pure): its delta-seconds, or the time to
    its HTTP-date (0 once it has passed; a date without a zone read as GMT, as HTTP's are);
    None if it is neither."""
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
