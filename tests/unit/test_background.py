"""common/background.py: a server's long-lived loop started again when it ends before the stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.background import kept_running


async def test_a_loop_ended_by_a_cancellation_not_the_stops_is_started_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    again = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:  # a CancelledError let out of a task it awaited
            inner = asyncio.ensure_future(asyncio.sleep(10))
            inner.cancel()
            await inner
        again.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(kept_running("probe", run, pause_s=0.0))
    await asyncio.wait_for(again.wait(), 5)
    assert runs == 2
    said = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert [r.getMessage() for r in said] == [
        "probe loop ended by CancelledError; started again in 0 s (a defect: please report it)"
    ]
    assert said[0].exc_info is not None  # where it came from
    task.cancel()  # the stop: it ends, unsaid
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == 2
    assert len([r for r in caplog.records if r.levelno == logging.CRITICAL]) == 1


async def test_a_loop_that_returns_or_raises_is_started_again_and_said_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    third = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            raise RuntimeError("a defect")
        if runs == 3:
            third.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(kept_running("probe", run, pause_s=0.0))
    await asyncio.wait_for(third.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert said == ["probe loop returned; started again in 0 s (a defect: please report it)"]


async def test_a_loop_that_swallows_the_stops_cancellation_is_not_started_again() -> None:
    runs = 0
    started = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # it should not, but then the stop must still end it

    task = asyncio.ensure_future(kept_running("probe", run, pause_s=0.0))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    await asyncio.wait_for(task, 5)
    assert runs == 1
