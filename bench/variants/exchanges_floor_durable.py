"""Variant (a measurement): `exchanges_floor_verified` plus the least durable writing.

The same bare server as bench/variants/exchanges_floor.py (see there), with the signature
checks and, before each answer, the fewest fsyncs the issue's rules allow: for an intake, the
call's config written as config.json is and one record of the call; for each webhook and
report POST, one record.
"""

from __future__ import annotations

import runpy
from pathlib import Path

runpy.run_path(
    str(Path(__file__).with_name("exchanges_floor.py")),
    {"FLOOR_VERIFY": True, "FLOOR_DURABLE": True},
)
