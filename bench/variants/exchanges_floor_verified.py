"""Variant (a measurement): `exchanges_floor` plus each webhook's and report's signature check.

The same bare server as bench/variants/exchanges_floor.py (see there), with the one piece of a
call's work that issue 17's rules keep whatever it costs: LiveKit's webhook verification and
the agent reports' (signature, body hash, expiry), by `common.signing.BodyVerifier`.
"""

from __future__ import annotations

import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).with_name("exchanges_floor.py")), {"FLOOR_VERIFY": True})
