"""Writes of one process to config.json take their turn in the order they came.

threading.Lock let a thread that came as the lock was let go take it before the threads
already waiting for it: under a burst of writes from many threads of one process (an
application's thread pool calling the seed's update_config) a write could wait out its whole
5 s, and fail (`held by a write of this process`), while writes that came after it went
through: in four runs of 128 threads writing 10 times each, 1 and 4 writes failed in two, and
the longest wait was 4.1 s to 5.5 s in three; taken in turn, none failed and none waited over
1.8 s."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from common.update_config import ConfigStore


def wait_for_waiters(store: ConfigStore, count: int) -> None:
    """Until `count` threads wait for the store's lock (a lock that cannot say: 0.2 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiters = getattr(store._thread_lock, "_waiters", None)
        if waiters is None:
            time.sleep(0.2)
            return
        if len(waiters) >= count:
            return
        time.sleep(0.01)


def test_a_write_that_comes_as_the_lock_is_let_go_waits_for_those_waiting(
    tmp_path: Path,
) -> None:
    store = ConfigStore(tmp_path / "config.json")
    store.update("Before")
    store._thread_lock.acquire()  # a write of this process under way
    waiting = threading.Thread(target=store.update, args=("Waiting",))
    waiting.start()
    wait_for_waiters(store, 1)  # it waits for the lock
    store._thread_lock.release()  # the write under way is done
    # The same thread writes again at once (a loop of writes, as a pool thread's): it went
    # first again, and again, while the one waiting waited on.
    taken_at_once = store._thread_lock.acquire(timeout=0)
    if taken_at_once:
        store._thread_lock.release()
    waiting.join(10)
    assert not taken_at_once
    assert store.load()["caller_name"] == "Waiting"


def test_writers_of_many_threads_go_in_the_order_they_came(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.json")
    order: list[str] = []
    apply = store._apply

    def recording(doc: dict[str, Any], mutations: list[Any]) -> list[Any]:
        results = apply(doc, mutations)
        order.append(doc["caller_name"])  # under the lock: the order the writes were made
        return results

    store._apply = recording  # type: ignore[method-assign]
    store._thread_lock.acquire()
    writers = []
    for number in range(5):
        writer = threading.Thread(target=store.update, args=(f"Writer {number}",))
        writer.start()
        writers.append(writer)
        wait_for_waiters(store, number + 1)  # each comes after the one before, all wait
    store._thread_lock.release()
    for writer in writers:
        writer.join(10)
    assert order == [f"Writer {n}" for n in range(5)]
    assert store.load()["caller_name"] == "Writer 4"


def test_a_waiter_that_gives_up_leaves_the_lock_to_the_next() -> None:
    from common.locks import FifoLock

    lock = FifoLock()
    lock.acquire()
    assert not lock.acquire(timeout=0.05)  # timed out: no longer waiting
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(lock.acquire(timeout=5)))
    waiter.start()
    time.sleep(0.05)
    lock.release()  # to the waiter, not to the one that gave up
    waiter.join(5)
    assert got == [True]
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    assert lock.acquire(blocking=False)
