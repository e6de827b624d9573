"""Test data and doubles shared across the suite."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

# The seed's three examples, verbatim, and its integration test's body (no dynamic_instruction).
SEED_EXAMPLES: list[dict[str, str]] = [
    {
        "phone_number": "+1234567890",
        "name": "Alice Smith",
        "dynamic_instruction": (
            "You are a cricket coach. Help the caller improve their batting technique."
        ),
        "language": "en",
        "emotion": "Excited",
    },
    {
        "phone_number": "+34612345678",
        "name": "Carlos García",
        "dynamic_instruction": "Eres un asistente de ventas. Ayuda al cliente con su pedido.",
        "language": "es",
        "emotion": "Calm",
    },
    {
        "phone_number": "+441234567890",
        "name": "Emma Watson",
        "dynamic_instruction": "You are a customer support agent helping with a technical issue.",
        "language": "en",
        "emotion": "Serious",
    },
]
SEED_TEST_BODY = {
    "phone_number": "+1234567890",
    "name": "Test User",
    "language": "en",
    "emotion": "Calm",
}


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def wait_for(
    predicate: Callable[[], Awaitable[object]], timeout: float = 60.0, poll_s: float = 0.05
) -> None:
    """Until `predicate()` is truthy; TimeoutError after `timeout` seconds (a bounded loop)."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(poll_s)
