"""Test data and doubles shared across the suite."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import json
import logging
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from livekit import api
from pytest_aiohttp import AiohttpServer

from common.storage.paging import Before
from sandbox import Sandbox

T = TypeVar("T")

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


async def raw_answer(client: TestClient[Any, Any], raw: bytes, timeout: float = 5.0) -> bytes:
    """`raw` sent as it is on a connection of its own (bytes no client library would send):
    the whole answer, read until the server closes the connection."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def config_forgets(path: Path, *call_ids: str, timeout: float = 5.0) -> dict[str, object]:
    """Until config.json at `path` holds none of `call_ids` (with none given: no call record
    at all); its call records then. A finished call's record goes with the next write, or on
    its own within FORGET_WITHIN_S (common/config_store/store.py)."""

    def records() -> dict[str, object]:
        calls: dict[str, object] = json.loads(path.read_text())["calls"]
        return calls

    async def gone() -> bool:
        left = records()
        return not left if not call_ids else not any(c in left for c in call_ids)

    await wait_for(gone, timeout=timeout, poll_s=0.02)
    return records()


async def every_page(
    fetch: Callable[[Before | None], Awaitable[Sequence[T]]],
    where_it_ends: Callable[[T], Before],
    limit: int,
) -> list[T]:
    """Walks a newest-first list page by page (`fetch(before)` gives one page of `limit`)
    until a short page; bounded to 100 pages."""
    seen: list[T] = []
    before: Before | None = None
    for _ in range(100):
        page = await fetch(before)
        seen += page
        if len(page) < limit:
            return seen
        before = where_it_ends(page[-1])
    raise AssertionError("more than 100 pages")


def livekit_done(method: str) -> web.Response:
    """A LiveKit stand-in's answer to Twirp `method` (the last part of its path) doing what it
    is asked: a dispatch made, a participant dialled, nothing listed, a room deleted."""
    message: Any = api.ListRoomsResponse()  # ListRooms, DeleteRoom, ListParticipants
    if method == "CreateDispatch":
        message = api.AgentDispatch(id="AD_standin")
    elif method == "CreateSIPParticipant":
        message = api.SIPParticipantInfo(participant_id="PA_standin", sip_call_id="SCL_standin")
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")


async def app_on_livekit(
    start_app: Callable[..., Awaitable[TestClient[Any, Any]]], url: str
) -> TestClient[Any, Any]:
    """The app (`start_app`) with LIVEKIT_URL at `url`: a LiveKit stand-in (`serving`)."""
    return await start_app(
        livekit_url=url,
        livekit_api_key="APIstandin",
        livekit_api_secret="stand-in-secret-0123456789abcdef0123456789",
        sip_outbound_trunk_id="ST_standin",
    )


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    route: str = "/{tail:.*}",
    method: str = "*",
) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 (a port of the system's choosing) answering `method route`
    with `handler` for as long as the block runs; yields its base URL."""
    app = web.Application()
    app.router.add_route(method, route, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving_posts(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int
) -> AsyncIterator[None]:
    """An HTTP server on 127.0.0.1:`port` answering `POST path` with `handler` (a customer's
    webhook receiver), for as long as the block runs."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield
    finally:
        await runner.cleanup()


async def cartesia_refusing_the_key(aiohttp_server: AiohttpServer) -> TestServer:
    """A local stand-in for Cartesia's TTS websocket that refuses the API key (401), for the
    real plugin to be pointed at."""

    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error": "invalid api key"}, status=401)

    app = web.Application()
    app.router.add_get("/tts/websocket", refuse)
    return await aiohttp_server(app)


class NullControl:
    """An agent's call control that no test expects to be used (the session's tools)."""

    async def set_outcome(self, outcome: str) -> None:
        raise AssertionError("not expected")

    async def hang_up(self) -> None:
        raise AssertionError("not expected")

    def do_not_call(self) -> None:
        raise AssertionError("not expected")


async def first_call_recorded(client: TestClient[Any, Any]) -> str:
    """The id of the first call `GET /calls` lists, once there is one (a call still being
    placed: its row is written before its dial)."""
    listed: list[dict[str, Any]] = []

    async def row_exists() -> bool:
        listed[:] = (await (await client.get("/calls")).json())["calls"]
        return bool(listed)

    await wait_for(row_exists)
    call_id: str = listed[0]["call_id"]
    return call_id


# A Wednesday 18:00 UTC: 10:00 in California, 13:00 in New York, 19:00 in Madrid: a moment
# inside the calling hours (CAMPAIGN_ENFORCE_CALLING_HOURS) of every test number's zone.
OPEN_EVERYWHERE = dt.datetime(2026, 12, 2, 18, 0, tzinfo=dt.UTC).timestamp()


class ShiftedClock:
    """Real time, moved to another moment of the day (and movable by the test): a campaign
    test that dials must not depend on the hour it runs at."""

    def __init__(self, at: float) -> None:
        self.offset = at - time.time()
        self.frozen_at: float | None = None

    def __call__(self) -> float:
        return self.frozen_at if self.frozen_at is not None else time.time() + self.offset

    def freeze(self) -> None:
        """Stop it where it is (nothing falls due on it) until the next `move_to`."""
        self.frozen_at = self()

    def move_to(self, at: float) -> None:
        self.frozen_at = None
        self.offset = at - time.time()


@dataclass
class HeldRequests:
    """Requests to one of the sandbox's LiveKit methods, held as they arrive (a LiveKit slow
    to answer them) until the test lets each go: what the test does meanwhile (a hang-up, a
    pause, a number listed) lands before LiveKit's answer however slow the machine, where a
    delay of a fraction of a second let it land first on a quick machine only."""

    arrived: int = 0
    let_go: int = 0

    async def arrival(self, count: int = 1) -> None:
        """Until `count` requests arrived (each held)."""

        async def enough() -> bool:
            return self.arrived >= count

        await wait_for(enough, timeout=30)

    def release(self) -> None:
        """The first request still held goes on (to its fault, if any, and its method)."""
        self.let_go += 1


def hold_requests(sandbox: Sandbox, method: str, times: int = 1) -> HeldRequests:
    """The first `times` requests to `method` (e.g. "CreateDispatch") held on arrival, each
    until `release()` (or 30 s: a test that failed before letting it go); a fault injected
    on the method plays once it goes on."""
    held = HeldRequests()
    real = sandbox._play_fault

    async def play(name: str, body: dict[str, Any]) -> None:
        if name == method and held.arrived < times:
            held.arrived += 1
            ticket = held.arrived
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    while held.let_go < ticket:
                        await asyncio.sleep(0.01)
        await real(name, body)

    sandbox._play_fault = play  # type: ignore[method-assign, assignment]
    return held


@dataclass
class HeldWrite:
    """A durable write of config.json held as a stalled disk holds it: `held` is set once it
    is, `go` lets it through, `landed` is set once it is written."""

    go: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    landed: threading.Event = field(default_factory=threading.Event)


def hold_config_write(monkeypatch: pytest.MonkeyPatch, marker: bytes) -> HeldWrite:
    """Hold the first write of config.json whose bytes hold `marker` (a caller's name) until
    `go`; every other write goes through."""
    from common.config_store import store as config_store_module

    held = HeldWrite()
    real = config_store_module._write_durably

    def holding(path: Path, data: bytes, mode: int = 0o600) -> None:
        if marker in data and not held.held.is_set():
            held.held.set()
            held.go.wait(30)
            real(path, data, mode)
            held.landed.set()
            return
        real(path, data, mode)

    monkeypatch.setattr(config_store_module, "_write_durably", holding)
    return held


@dataclass
class FullDisk:
    """The app's placements refused as a full disk refuses config.json's write (nothing
    placed, the campaign's attempts left being placed) while `full`; `tries` counts them."""

    full: bool = True
    tries: int = 0

    def refuse_placements(self, client: TestClient[Any, Any]) -> None:
        from common.config_store.store import ConfigWriteError
        from handlers.keys import CALLS

        calls = client.app[CALLS]
        real_place = calls.place

        async def place(*args: Any, **kwargs: Any) -> Any:
            self.tries += 1
            if self.full:
                raise ConfigWriteError(28, "No space left on device")
            return await real_place(*args, **kwargs)

        calls.place = place

    async def tried(self, times: int) -> None:
        """Until placements were refused (or made) `times` times."""

        async def enough() -> bool:
            return self.tries >= times

        await wait_for(enough, timeout=10)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` made immutable (`chattr +i`: root, on a file system that has the attribute, ext4
    here; the test is skipped elsewhere) for the block, then writable again."""
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)  # noqa: S607
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot make a file immutable here ({type(exc).__name__})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)  # noqa: S607


def calls_made(work: Callable[[], object], repeat: int = 1) -> int:
    """How many functions `work` calls (Python's and C's): a count of the work done that,
    unlike a clock, a loaded machine does not change. The garbage collector is held off
    meanwhile: a collection in the middle ran finalizers of earlier tests' objects, and
    their calls were counted as the work's (22 calls against 10, once in a full run).
    `repeat`: for work that may run again (a pure function), the fewest of that many runs,
    as a signal handler's calls (a child's exit) would be counted too."""
    if repeat > 1:
        return min(calls_made(work) for _ in range(repeat))
    count = 0

    def profile(_frame: FrameType, event: str, _arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    collecting = gc.isenabled()
    gc.disable()
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
        if collecting:
            gc.enable()
    return count


async def placed_and_settled(
    client: TestClient[Any, Any], body: dict[str, Any], headers: dict[str, str]
) -> str:
    """A call placed on the app's embedded sandbox, run to its end, its events dispatched."""
    from handlers.keys import EVENTS
    from server import SANDBOX

    resp = await client.post("/calls/outbound", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    call_id: str = (await resp.json())["call_id"]
    await client.app[SANDBOX].wait_idle(15)
    await client.app[EVENTS].wait_idle()
    return call_id


def config_files_holding(directory: Path, *needles: bytes) -> list[str]:
    """The files beside config.json (itself, its copies set aside, its lock) holding one of
    `needles` (a callee's name, a word of their instructions)."""
    return sorted(
        path.name
        for path in directory.glob("config.json*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    )


@contextlib.contextmanager
def files_capped_at(size: int) -> Iterator[None]:
    """Writes past `size` bytes fail (EFBIG), as under `ulimit -f` (and as a write on a full
    disk fails, ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the error, not the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def held_back_at_stop(caplog: pytest.LogCaptureFixture) -> str:
    """The one ERROR line an outage still going on as the server stopped said of the
    failures held back since its last line (common/repeats.py say_held_back_at_stop)."""
    held = [r for r in caplog.records if "held back, as the server stops" in r.getMessage()]
    assert len(held) == 1, [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert held[0].levelno == logging.ERROR
    return held[0].getMessage()


def warnings_saying(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The WARNING lines caught so far that say `text`."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and text in r.getMessage()
    ]
