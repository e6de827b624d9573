"""common/waiting.py: a bounded wait for an event that never loses a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from common.waiting import wait_set


async def test_a_cancellation_as_the_event_is_set_is_kept() -> None:
    """The event is set and the waiter cancelled in the same turn of the loop (a send ending
    as the webhook sender is stopped). asyncio.wait_for on Python 3.11 returned normally
    there, the loop around it ran on, and stop() waited for it for ever."""
    for _ in range(20):
        event = asyncio.Event()
        waiter = asyncio.ensure_future(wait_set(event, 10.0))
        await asyncio.sleep(0)  # the waiter is waiting on the event
        event.set()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter


async def test_it_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_set(event, 5.0) is True
