"""Variant: config.json async writes are not grouped (one durable write per caller).

`ConfigStore._submit` normally queues the mutation for the loop's next group write, so callers
waiting at the same time share one locked read-mutate-encode-fsync-rename. Here every caller
runs `_mutate_async` with its own mutation alone: concurrent callers queue on the store's locks
in executor threads, each paying a whole durable write.
"""

from __future__ import annotations

import time
from typing import Any

from bench.variants._check import require
from common.config_store import store

require(store.ConfigStore, "_submit", "_mutate_async", "_guard")
require(store, "_MutationFailed")


async def _submit_alone(
    self: store.ConfigStore, mutation: store.Mutation, *, placing_call: str | None = None
) -> Any:
    deadline = time.monotonic() + store.LOCK_WAIT_S
    results = await self._mutate_async([self._guard(mutation)], deadline)
    result = results[0]
    if isinstance(result, store._MutationFailed):
        raise result.exc
    return result


store.ConfigStore._submit = _submit_alone  # type: ignore[method-assign]
