"""The rules of webhook host lookups (common/notify/lookups.py): one lookup of a name at a
time, a lookup nobody waits for dropped before it starts, and names slow lately held to
their share of the threads, answered at once past it, so that the other names always find
one. DNS is `socket.getaddrinfo` monkeypatched and the clock a counter the test moves."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from common.calls.errors import InvalidCall
from common.calls.service import WebhookHostUnresolved, check_webhook_address
from common.notify import guard, lookups
from common.notify.guard import PooledResolver
from common.notify.lookups import LookupsBusy, NameLookups
from common.own_threads import OwnThreads
from common.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Dns:
    """`slow-*` names take 2 s (on the clock) to fail once, then block; `hang-*` block from
    the first lookup; until `released`. Others are 127.0.0.1."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.released = threading.Event()
        self.asked: Counter[str] = Counter()
        self.blocked = 0
        self._lock = threading.Lock()
        self._real = socket.getaddrinfo

    def __call__(self, host: Any, *args: Any, **kwargs: Any) -> Any:
        name = str(host)
        with self._lock:
            self.asked[name] += 1
            first = self.asked[name] == 1
            hangs = name.startswith("hang-") or (name.startswith("slow-") and not first)
            self.blocked += hangs
        if name.startswith("slow-") and first:
            self.clock.now += 2.0
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if hangs:
            try:
                self.released.wait(60)
            finally:
                with self._lock:
                    self.blocked -= 1
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return self._real("127.0.0.1", *args, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> Iterator[Dns]:
    fake = Dns(clock)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    try:
        yield fake
    finally:
        fake.released.set()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_names_slow_lately_hold_their_share_of_threads_and_no_more(
    dns: Dns, clock: Clock
) -> None:
    names = NameLookups("test-slow-share", lanes=4, slow_lanes=2, clock=clock)
    for n in range(6):  # each slow once: known slow from then on
        with pytest.raises(socket.gaierror):
            await names.getaddrinfo(f"slow-{n}.test", socket.AF_INET)
    again = [
        asyncio.ensure_future(names.getaddrinfo(f"slow-{n}.test", socket.AF_INET)) for n in range(6)
    ]
    await until(lambda: dns.blocked == 2 and sum(task.done() for task in again) == 4)
    busy = [task.exception() for task in again if task.done()]
    assert all(isinstance(error, LookupsBusy) for error in busy), busy
    assert "slow-2.test was slow to resolve lately, and 2 lookups of slow names" in str(busy[0])
    assert sum(dns.asked[f"slow-{n}.test"] for n in range(6)) == 6 + 2  # refused: not asked
    # The two held, the others' threads are free: a name that answers is answered.
    assert await asyncio.wait_for(names.getaddrinfo("ok.test", socket.AF_INET), 10)
    dns.released.set()
    for task in again:
        with pytest.raises((socket.gaierror, LookupsBusy)):
            await task
    # None running now: a slow name is looked up again.
    with pytest.raises(socket.gaierror) as raised:
        await asyncio.wait_for(names.getaddrinfo("slow-5.test", socket.AF_INET), 10)
    assert not isinstance(raised.value, LookupsBusy)


async def test_lookups_running_long_count_against_the_share_of_slow_names(
    dns: Dns, clock: Clock
) -> None:
    """A name never slow before that hangs now counts as slow once it ran SLOW_S."""
    names = NameLookups("test-slow-running", lanes=4, slow_lanes=1, clock=clock)
    with pytest.raises(socket.gaierror):
        await names.getaddrinfo("slow-a.test", socket.AF_INET)
    hanging = asyncio.ensure_future(names.getaddrinfo("hang-a.test", socket.AF_INET))
    await until(lambda: dns.blocked == 1)
    clock.now += lookups.SLOW_S + 1
    with pytest.raises(LookupsBusy):
        await names.getaddrinfo("slow-a.test", socket.AF_INET)
    clock.now += lookups.SLOW_MEMORY_S  # slow long ago: a name like any other, looked up
    again = asyncio.ensure_future(names.getaddrinfo("slow-a.test", socket.AF_INET))
    await until(lambda: dns.blocked == 2)
    dns.released.set()
    for task in (hanging, again):
        with pytest.raises(socket.gaierror) as raised:
            await task
        assert not isinstance(raised.value, LookupsBusy)


async def test_a_name_is_looked_up_once_however_many_ask_on_whatever_ports(dns: Dns) -> None:
    names = NameLookups("test-once")
    resolver = PooledResolver(names)
    hanging = asyncio.ensure_future(names.getaddrinfo("hang-x.test", socket.AF_INET))
    await until(lambda: dns.blocked == 1)
    waiting = [
        asyncio.ensure_future(names.getaddrinfo("HANG-x.test", socket.AF_INET)) for _ in range(20)
    ]
    await asyncio.sleep(0)  # each joined the lookup running
    assert dns.asked["hang-x.test"] == 1 and dns.asked["HANG-x.test"] == 0
    dns.released.set()
    for task in [hanging, *waiting]:
        with pytest.raises(socket.gaierror):
            await task
    assert dns.asked["hang-x.test"] == 1

    found = await asyncio.gather(
        *(resolver.resolve("one.test", p, socket.AF_INET) for p in (80, 443))
    )
    assert [[r["port"] for r in results] for results in found] == [[80], [443]]
    assert found[0][0]["host"] == "127.0.0.1" and found[0][0]["hostname"] == "one.test"


async def test_a_lookup_nobody_waits_for_any_more_is_dropped_before_it_starts(dns: Dns) -> None:
    names = NameLookups("test-dropped", lanes=1)
    hanging = asyncio.ensure_future(names.getaddrinfo("hang-y.test", socket.AF_INET))
    await until(lambda: dns.blocked == 1)
    with pytest.raises(TimeoutError):  # queued behind the one thread's lookup; given up
        await asyncio.wait_for(names.getaddrinfo("gone.test", socket.AF_INET), 0.1)
    dns.released.set()
    with pytest.raises(socket.gaierror):
        await hanging
    assert await asyncio.wait_for(names.getaddrinfo("next.test", socket.AF_INET), 10)
    assert dns.asked["gone.test"] == 0  # the thread went to the next lookup


async def test_a_placement_check_of_a_name_slow_lately_says_to_retry_later(
    dns: Dns, clock: Clock, monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    from common.calls import service

    names = NameLookups("test-check", lanes=4, slow_lanes=1, clock=clock)
    monkeypatch.setattr(service, "CHECK_DNS", names)
    settings = make_settings(calls_webhook_allow_private=True)
    for host in ("slow-b.test", "slow-c.test"):
        with pytest.raises(WebhookHostUnresolved):
            await check_webhook_address(f"http://{host}/x", settings)
    held = asyncio.ensure_future(check_webhook_address("http://slow-b.test/x", settings))
    await until(lambda: dns.blocked == 1)
    with pytest.raises(WebhookHostUnresolved) as refused:
        await check_webhook_address("http://slow-c.test/x", settings)
    assert refused.value.errors[0].error == (
        "slow-c.test was slow to resolve lately and is not looked up again while other slow"
        " names' lookups run; retry later"
    )
    await check_webhook_address("http://fine.test/x", settings)  # answered: no InvalidCall
    dns.released.set()
    with pytest.raises(InvalidCall):
        await held


def test_the_webhook_lookups_are_name_lookups() -> None:
    assert isinstance(PooledResolver()._lookups, NameLookups)
    assert PooledResolver()._lookups is guard._DNS


async def test_a_stop_during_a_hanging_lookup_says_so_not_a_stalled_disk(
    dns: Dns, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while a customer's name server did not answer said "exiting without 1
    thread(s) still held in a file operation (a stalled disk?): webhook-dns_0", an ERROR
    sending the operator to a disk that was fine."""
    import logging
    import os

    import server

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # pytest's handlers stay open
    names = NameLookups("test-stop-lookups")
    hanging = asyncio.ensure_future(names.getaddrinfo("hang-stop.test", socket.AF_INET))
    await until(lambda: dns.blocked == 1)
    OwnThreads.close_all()  # as the server does first: the idle threads end
    with caplog.at_level(logging.WARNING, logger="server"):
        await asyncio.to_thread(server._leave_stuck_threads, 0.05)
    dns.released.set()
    with pytest.raises(socket.gaierror):
        await hanging
    assert exits == [0]
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "server"]
    assert (
        "WARNING",
        "exiting without 1 webhook host lookup(s) still waiting for a name server that does"
        " not answer (hang-stop.test)",
    ) in said, said
    assert not any("test-stop-lookups" in message for _level, message in said), said
