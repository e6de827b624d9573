"""Variant: Python's default garbage collection thresholds (700, 10, 10), as before the
server raised the young generation's to 7,000 (`server.collect_garbage_less_often`)."""

from __future__ import annotations

import server
from bench.variants._check import require

require(server, "collect_garbage_less_often")


def _default_thresholds() -> None:
    """The thresholds left as Python set them."""


server.collect_garbage_less_often = _default_thresholds
