"""Variant: the config.json TTL prune scans every record on every write.

`ConfigStore._prune(doc, now, oldest)` normally skips the scan while the lower bound `oldest`
of every record's written_at (known from the previous write) is within the TTL. Here `oldest`
is ignored: each write looks at every live call's record for stale ones.
"""

from __future__ import annotations

from bench.variants._check import require
from common.config_store import store

require(store.ConfigStore, "_prune")

_prune = store.ConfigStore._prune


def _prune_always(
    self: store.ConfigStore, doc: store.Document, now: float, oldest: float | None = None
) -> float:
    return _prune(self, doc, now, None)


store.ConfigStore._prune = _prune_always  # type: ignore[method-assign]
