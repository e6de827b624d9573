"""Measurement: bench/variants/gc_timed.py with Python's default garbage collection
thresholds (bench/variants/default_gc.py)."""

from __future__ import annotations

import bench.variants.default_gc  # noqa: F401 - applied on import
import bench.variants.gc_timed  # noqa: F401 - timing from here on
