"""Waiting for an asyncio.Event with a bound, in loops that other code stops by cancelling."""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Until `event` is set (True) or `timeout` seconds pass (False).

    Not `asyncio.wait_for`: on Python 3.11 it returns the event's result when a cancellation
    comes at the moment the event is set, and the cancellation is lost. A background loop
    stopped that way ran on, and the `stop()` awaiting it waited for ever (the customer
    webhook sender, woken by each send that ended as it was stopped, hung a test's teardown
    for 120 s and more). `asyncio.timeout` keeps a cancellation that is not its own.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
