"""Running hypothesis against the live app of an async test.

Hypothesis drives a plain function, so the test runs it in a worker thread and each example
sends its request to the app on the test's own event loop, which keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")
EXAMPLE_TIMEOUT_S = 30.0


class LoopBridge:
    """Runs coroutines on `loop` from another thread and waits for their results."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(EXAMPLE_TIMEOUT_S)


def fuzz_settings(max_examples: int) -> Callable[[Any], Any]:
    """Settings for a live-app fuzz run: no deadline (it is I/O), no example database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
