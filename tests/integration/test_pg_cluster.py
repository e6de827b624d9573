"""The throwaway PostgreSQL cluster helper (tests/pg_cluster.py) against a real server."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests import pg_cluster
from tests.pg_cluster import (
    PostgresBinariesNotFoundError,
    PostgresCluster,
    find_pg_binaries,
)

# Fixtures, until tests/conftest.py imports them. The redundant `as` marks an explicit
# re-export for ruff and mypy; a plain import silenced for F401 would still trip F811
# ("redefinition of unused name") on every test parameter that names the fixture.
from tests.pg_cluster import postgres_cluster as postgres_cluster
from tests.pg_cluster import postgres_dsn as postgres_dsn

# A query on a connection the server has dropped fails with one of these, depending on
# whether asyncpg noticed the disconnect before or while sending the query.
DISCONNECTED = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    ConnectionError,
)


async def test_select_one(postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_dsn_uses_password_auth_over_tcp(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    assert postgres_dsn.startswith(
        f"postgresql://test:{postgres_cluster.password}@127.0.0.1:{postgres_cluster.port}/"
    )
    wrong = postgres_dsn.replace(postgres_cluster.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(wrong)


async def test_databases_are_independent(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    other_name = f"other_{uuid.uuid4().hex[:12]}"
    other_dsn = postgres_cluster.create_database(other_name)
    first = await asyncpg.connect(postgres_dsn)
    second = await asyncpg.connect(other_dsn)
    try:
        await first.execute("CREATE TABLE only_here (x int)")
        assert await first.fetchval("SELECT to_regclass('only_here') IS NOT NULL")
        assert await second.fetchval("SELECT to_regclass('only_here') IS NULL")
        assert await first.fetchval("SELECT current_database()") != other_name
        assert await second.fetchval("SELECT current_database()") == other_name
    finally:
        await first.close()
        await second.close()
        postgres_cluster.drop_database(other_name)


async def test_restart_drops_connections_and_keeps_data(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    port = postgres_cluster.port
    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        postgres_cluster.restart()
        with pytest.raises(DISCONNECTED):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()  # already dead; terminate() needs no round trip

    assert postgres_cluster.port == port  # DSNs handed out earlier stay valid
    fresh = await asyncpg.connect(postgres_dsn)
    try:
        assert await fresh.fetchval("SELECT x FROM t") == 42
    finally:
        await fresh.close()


async def test_kill_then_start_recovers(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        postgres_cluster.kill()
        assert not postgres_cluster.is_running()
        with pytest.raises(DISCONNECTED):
            await conn.fetchval("SELECT 1")
    finally:
        conn.terminate()
        # Leave the session cluster usable for later tests even if an assertion failed.
        postgres_cluster.start()

    assert postgres_cluster.is_running()
    # Crash recovery kept the database created before the kill.
    fresh = await asyncpg.connect(postgres_dsn)
    try:
        assert await fresh.fetchval("SELECT 1") == 1
    finally:
        await fresh.close()


async def test_a_frozen_cluster_whose_backend_died_meanwhile_is_all_continued(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    """A child of the postmaster that exited while the cluster was frozen (a backend whose
    connection had just closed) is reaped as soon as its postmaster runs again. The postmaster
    was continued first, the child's SIGCONT then raised ProcessLookupError and left the
    children after it stopped: every later test on that cluster timed out (CI, stop 49). The
    reaping is made certain here: the postmaster runs alone until the killed backend is gone."""
    conn = await asyncpg.connect(postgres_dsn)
    try:  # (left open by a failure, it failed the worker's next test as a ResourceWarning)
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        postmaster = int((postgres_cluster.data_dir / "postmaster.pid").read_text().split()[0])
        with postgres_cluster.frozen():
            # (a child that had exited before the freeze, a zombie its postmaster had not
            # reaped yet, is not one to stop: the last test's backend, on a loaded machine)
            children = pg_cluster._children_of(postmaster)
            stopped = [postmaster, *(p for p in children if pg_cluster._process_state(p) != "Z")]
            assert {pg_cluster._process_state(pid) for pid in stopped} == {"T"}
            os.kill(backend, signal.SIGKILL)
            os.kill(postmaster, signal.SIGCONT)  # it reaps the backend as soon as it runs
            deadline = time.monotonic() + 10.0
            while pg_cluster._process_state(backend) is not None:
                assert time.monotonic() < deadline, "the killed backend was not reaped"
                time.sleep(0.01)
            os.kill(postmaster, signal.SIGSTOP)
    finally:
        conn.terminate()
    for pid in stopped:
        assert pg_cluster._process_state(pid) in (None, "R", "S", "D", "Z"), pid
    deadline = time.monotonic() + 30.0
    while True:  # the postmaster restarts its backends after one was killed, then answers
        try:
            fresh = await asyncpg.connect(postgres_dsn, timeout=5.0)
            break
        except (OSError, asyncpg.PostgresError):
            assert time.monotonic() < deadline, "the cluster did not answer again"
            time.sleep(0.2)
    try:
        assert await fresh.fetchval("SELECT 1") == 1
    finally:
        await fresh.close()


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A = TCP_LISTEN
                continue
            # The kernel prints each 32-bit word in host (little-endian) byte order.
            raw = b"".join(bytes.fromhex(address[i : i + 8])[::-1] for i in range(0, width, 8))
            found.append(str(ipaddress.ip_address(raw)))
    return found


async def test_bound_to_loopback_only(postgres_cluster: PostgresCluster, postgres_dsn: str) -> None:
    conn = await asyncpg.connect(postgres_dsn)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await conn.close()
    assert _listening_addresses(postgres_cluster.port) == ["127.0.0.1"]


def test_missing_binaries_error_says_how_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    with pytest.raises(PostgresBinariesNotFoundError) as excinfo:
        find_pg_binaries(path=str(empty), search_glob=str(tmp_path / "lib/*/bin"))
    message = str(excinfo.value)
    assert "apt-get install postgresql" in message
    assert "PATH" in message
    assert "/usr/lib/postgresql/<ver>/bin" in message


def test_finder_picks_newest_complete_version(tmp_path: Path) -> None:
    def fake_install(version: str, names: tuple[str, ...]) -> Path:
        bin_dir = tmp_path / "lib" / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in names:
            (bin_dir / name).write_text("#!/bin/sh\n")
            (bin_dir / name).chmod(0o755)
        return bin_dir

    fake_install("9.6", ("initdb", "pg_ctl", "postgres"))
    expected = fake_install("15", ("initdb", "pg_ctl", "postgres"))
    fake_install("16", ("initdb", "pg_ctl"))  # incomplete: no server binary

    found = find_pg_binaries(
        path=str(tmp_path / "nowhere"), search_glob=str(tmp_path / "lib/*/bin")
    )
    assert found.postgres == expected / "postgres"
    assert found.initdb.parent == found.pg_ctl.parent == expected


def test_own_cluster_retries_busy_port_and_remove_cleans_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_free_port = pg_cluster._free_loopback_port
    with socket.socket() as squatter:
        # Someone else takes the "free" port between our probe and the postmaster's bind.
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = int(squatter.getsockname()[1])
        ports = iter([busy])
        monkeypatch.setattr(
            pg_cluster, "_free_loopback_port", lambda: next(ports, None) or real_free_port()
        )
        with PostgresCluster() as cluster:
            assert cluster.is_running()
            assert cluster.port != busy
            assert "already in use" in cluster.log_file.read_text()
            root = cluster.root
            pid_line = (cluster.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]

    assert not root.exists()
    # Gone, or a zombie: the postmaster's adoptive parent (PID 1 here) may reap it late.
    stat = Path(f"/proc/{int(pid_line)}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    cluster.remove()  # idempotent


def test_a_cluster_whose_test_process_is_killed_is_stopped_and_removed() -> None:
    """A pytest worker killed (SIGKILL here; a SIGTERM or a `timeout` alike: atexit does not
    run) left its postmaster running and its /tmp/pg-cluster-* behind for good (GW's
    finding): the cluster's watchdog stops and removes them."""
    script = (
        "import os, signal\n"
        "from tests.pg_cluster import PostgresCluster\n"
        "cluster = PostgresCluster()\n"
        "cluster.start()\n"
        "pid = (cluster.data_dir / 'postmaster.pid').read_text().split(chr(10), 1)[0]\n"
        "print(cluster.root, pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    project = Path(__file__).resolve().parents[2]
    made = subprocess.run(
        [sys.executable, "-c", script], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert made.returncode == -signal.SIGKILL, made.stderr
    root_name, pid = made.stdout.split()
    root, stat = Path(root_name), Path(f"/proc/{int(pid)}/stat")

    def running() -> bool:  # gone, or a zombie its adoptive parent reaps late
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.monotonic() + 30
    while (running() or root.exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running()
    assert not root.exists()
