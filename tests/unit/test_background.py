"""common/background.py: a server's long-lived loop started again when it ends before the stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.background import SlowSteps, kept_running


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


async def _stuck_here(never: asyncio.Event) -> None:
    await never.wait()


async def test_a_slow_step_is_said_once_with_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="common.background")
    slow = SlowSteps("probe", 0.05)
    never = asyncio.Event()

    async def step() -> None:
        slow.begin(lambda: "a step")
        try:
            await _stuck_here(never)
        finally:
            slow.end()

    task = asyncio.ensure_future(step())
    await asyncio.sleep(0.3)
    task.cancel()
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1, said
    assert said[0].startswith("probe: a step has run for 0 s and goes on; it waits at step ("), said
    assert " > _stuck_here (test_background.py:" in said[0], said


async def test_a_step_that_ends_in_time_is_not_said(caplog: pytest.LogCaptureFixture) -> None:
    slow = SlowSteps("probe", 0.05)
    for _ in range(3):
        slow.begin(lambda: "a step")
        await asyncio.sleep(0.02)
        slow.end()
    await asyncio.sleep(0.1)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
