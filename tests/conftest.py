"""Shared fixtures: real files in a temp directory, the module store pointed at them."""

from __future__ import annotations

import errno
import gc
import itertools
import os
import socket
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from common import update_config
from common.update_config import ConfigStore

# A stopped test server's connections accepted too late to be closed: closed with the loop.
from tests import loop_leaks  # noqa: E402

# A throwaway PostgreSQL cluster (one per test session) and a fresh database per test.
from tests.pg_cluster import postgres_cluster as postgres_cluster
from tests.pg_cluster import postgres_dsn as postgres_dsn

loop_leaks.install()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve or connect fails the test: the code under test stays offline."""

    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tmp_path / "config.json"


@pytest.fixture
def store(config_path: Path) -> ConfigStore:
    return ConfigStore(config_path)


@pytest.fixture
def default_store(config_path: Path) -> Iterator[ConfigStore]:
    """The seed's module-level functions, writing to a temp config.json."""
    previous = update_config._default_store
    configured = update_config.configure_store(config_path)
    yield configured
    update_config._default_store = previous


# ---------------------------------------------------------------------------------------------
# The real app on the embedded sandbox, for integration tests.

import dataclasses  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable  # noqa: E402
from typing import Any  # noqa: E402

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from common.settings import Settings  # noqa: E402
from tests.processes import free_port  # noqa: E402

AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on temp files, the sandbox on an ephemeral port, 100x faster than real time."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "config_path": tmp_path / "config.json",
            "calls_db_path": tmp_path / "calls.db",
            "sandbox_port": 0,
            "sandbox_time_scale": 0.01,
            "reaper_interval_s": 3600.0,
            # Unanswered calls settle as room_finished is handled; grace tests set their own.
            "calls_settle_grace_s": 0.0,
            # Tests break a component and look at /readyz at once: no verdict reused.
            "readyz_reuse_s": 0.0,
            "metrics_reuse_s": 0.0,  # nor the counts of /metrics
        }
        base.update(overrides)
        return dataclasses.replace(Settings(), **base)

    return make


def _listening_socket(host: str, port: int, family: socket.AddressFamily) -> socket.socket:
    """aiohttp's test socket, closed when its bind fails (aiohttp's leaks it: a warning that
    failed whichever test was running when it was collected)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@pytest.fixture
async def start_app(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    make_settings: Callable[..., Settings],
) -> AsyncIterator[AppFactory]:
    """Start the real app (create_app) with the sandbox posting webhooks back to it.

    The seed's module-level functions are pointed at the app's config.json, as CONFIG_PATH
    does for a server and the code around it in one process.
    """
    from handlers.access_log import CallsAccessLogger
    from server import SANDBOX, create_app

    previous = update_config._default_store

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        # The port is chosen first, so the addresses the server gives out (the sandbox's
        # webhook URL, the agents' report URL) are where it listens. Taken meanwhile (by
        # another worker), the app is made again on another one.
        chosen = overrides.pop("port", None)
        campaign_clock = overrides.pop("campaign_clock", time.time)
        for attempt in range(1, 6):
            port = chosen or free_port()
            settings = make_settings(port=port, **overrides)
            config = update_config.configure_store(
                settings.config_path, record_ttl_s=settings.config_record_ttl_s
            )
            app = create_app(settings, config=config, campaign_clock=campaign_clock)
            # started here: TestServer drops runner options
            server = TestServer(app, port=port, socket_factory=_listening_socket)
            try:
                await server.start_server(access_log_class=CallsAccessLogger)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or chosen or attempt == 5:
                    raise
                await server.close()
                continue
            started.append(app)
            return await aiohttp_client(server)
        raise AssertionError("unreachable")

    started: list[web.Application] = []
    yield start
    # The embedded sandbox stops posting before the server closes (aiohttp_client's teardown
    # follows this one): a webhook's or report's connection the server accepted as it
    # stopped listening was never closed (its transport made after the server closed those
    # it knew), an "unclosed transport" failing a later test now and then under load.
    for app in started:
        if (sandbox := app.get(SANDBOX)) is not None:
            await sandbox.stop_posting()
    update_config._default_store = previous


@pytest.fixture
async def client(start_app: AppFactory) -> TestClient[Any, Any]:
    return await start_app()


@pytest.fixture(params=["sqlite", "postgres"])
def start_app_on_each_database(request: pytest.FixtureRequest) -> AppFactory:
    """`start_app` on each calls database in turn: SQLite (the default), then a fresh
    PostgreSQL database. For inputs whose fate depends on what the database can hold
    (PostgreSQL's text refuses NUL, SQLite keeps it). The database is set up first, so the
    app stops before its database is dropped."""
    overrides: dict[str, Any] = {}
    if request.param == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_dsn")
    start: AppFactory = request.getfixturevalue("start_app")

    async def start_on_database(**more: Any) -> TestClient[Any, Any]:
        return await start(**overrides, **more)

    return start_on_database


@pytest.fixture
def start_app_on(database: str, request: pytest.FixtureRequest) -> AppFactory:
    """`start_app` on the `database` a test is parametrized with ("sqlite", "postgres": every
    app it starts on one fresh database), set up first as start_app_on_each_database's is.
    A test that asked for `postgres_dsn` in its body had it torn down first: its database
    was dropped under the running apps, and the drop (WITH (FORCE)) ran out of its 30 s once
    in a loaded suite, an error in the test's teardown."""
    overrides: dict[str, Any] = {}
    if database == "postgres":
        overrides["database_url"] = request.getfixturevalue("postgres_dsn")
    start: AppFactory = request.getfixturevalue("start_app")

    async def start_on(**more: Any) -> TestClient[Any, Any]:
        return await start(**overrides, **more)

    return start_on


@pytest.hookimpl(wrapper=True)
def pytest_collection() -> Generator[None, object, object]:
    """No garbage collection while the tests are collected, and what collection left frozen.

    Each of the six workers imports the project, livekit-agents and some 450 test modules;
    the collector went over that growing heap again and again meanwhile (some 1 s of CPU a
    worker, for collections that freed little), and then over all of it in every full
    collection of the run (0.3 s each time). What collection left is collected once, and what
    remains (modules, classes, the test items: most of a worker's heap) is frozen, out of the
    collector's way; the tests' own garbage is collected as before (what is made after the
    freeze is not frozen)."""
    gc.disable()
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (reliability/: processes, restarts, loads; half the suite's CPU) spread
    through the first three quarters of every worker's run. pytest-xdist's worksteal hands
    each of its N workers one contiguous run of the list, then lets an idle worker take half
    of the longest remaining run from its end. With reliability/ in the middle of the list,
    its 10-60 s tests were what workers were left with at the end; with it first, all of it
    fell in the first worker's run, which ran those tests one after the other from start to
    end (156 tests, 418 s, the others stealing them only in the last minutes). At the head
    of every run, six of them ran at once for the first minutes, each slower for it. Now each
    run has its share of them among its quick tests, and ends on quick ones."""
    slow_dir = str(Path("tests", "reliability"))
    slow = [item for item in items if slow_dir in str(item.path)]
    quick = iter([item for item in items if slow_dir not in str(item.path)])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker in range(workers):
        size = left // (workers - worker)  # the run xdist's worksteal gives this worker
        left -= size
        share = slow[worker::workers]
        room = max(0, size - len(share))  # for quick tests in this run
        between = room * 3 // 4 // max(1, len(share))
        for item in share:
            ordered += [item, *itertools.islice(quick, between)]
        ordered += itertools.islice(quick, room - between * len(share))
    ordered += quick
    assert len(ordered) == len(items)
    items[:] = ordered


@pytest.fixture(autouse=True)
def fresh_log_repeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module-wide once-a-minute counters (common/repeats.py) fresh for each test: a line
    said in one test held back the same kind of line in a later test of the same worker, whose
    check of it then failed, or not, by the order the tests ran in."""
    from common.repeats import Repeats
    from common.storage import campaign_programs, programs
    from handlers import errors

    for module, name in (
        (programs, "_UNREADABLE"),
        (campaign_programs, "_UNREADABLE"),
        (errors, "_OUT_OF_DESCRIPTORS_SAID"),
        (errors, "WRONG_PROTOCOL_SAID"),
    ):
        monkeypatch.setattr(module, name, Repeats())
