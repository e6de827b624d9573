"""Redaction of aiohttp's access log: request lines are client text, and a client may put a
phone number in a URL (`GET /calls/+14155550123`, a query value). Every run of 7+ digits in
the logged request line keeps only its last 4, as `mask_phone` does for our own log lines."""

from __future__ import annotations

import logging
import re

from common.masking import mask_digits

ACCESS_LOGGER = "aiohttp.access"
_REQUEST_LINE = re.compile(r'"[A-Z]+ [^"]*"')


class RedactRequestLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _REQUEST_LINE.sub(lambda m: mask_digits(m.group()), message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def install() -> None:
    """Add the filter to aiohttp's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactRequestLine) for f in logger.filters):
        logger.addFilter(RedactRequestLine())
